"""Causal language modelling (GPT; Radford et al., 2018): a Transformer whose attention
sees only the past predicts every next token of the entry.

Position t predicts token t+1 for every real target ([SEP] included, so the model learns
where an entry ends); padded targets carry no loss. The LM head is tied to the token
embedding. Features: the state of the last real token, the only one that has seen the
whole entry (``TextTransformer.features``). Training draws no random numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.config import Strict
from pipeline.methods._base import Batches, TextMethod
from pipeline.registry import METHODS
from pipeline.modalities.text.encoder import unpack_text
from pipeline.modalities.text.objectives import IGNORE, next_token_targets, token_loss, unigram_nll


@METHODS.register
class CLM(TextMethod):
    name = "clm"
    causal = True

    class Params(Strict):
        """The objective has no hyperparameters of its own; the causal Transformer is the
        method's ``encoder:`` section (``causal: true``), GPT's optimiser its ``pretrain:``."""

    def _next_token_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed ``[N, 2, L]`` -> ``(logits [K, V], targets [K])`` at the K positions whose next
        token is real: the LM head (the largest matmul) skips padding."""
        ids, att = unpack_text(x)
        backbone = self.encoder.backbone
        targets = next_token_targets(ids, att)
        real = targets != IGNORE
        return backbone.logits(backbone(ids, att)[:, :-1][real]), targets[real]

    def training_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, targets = self._next_token_logits(x)
        return {"loss": token_loss(logits, targets)}

    @torch.no_grad()
    def held_out_metrics(self, batches: Batches) -> dict[str, float]:
        """``perplexity``: exp of the mean next-token cross-entropy over the real targets of
        "val"; ``unigram_perplexity``: the same targets under an add-one unigram model counted
        on the "pretrain" split, the floor a model of the context has to beat."""
        counts = torch.zeros(self.encoder.vocab_size, dtype=torch.long)
        for x, _ in batches("pretrain"):
            t = next_token_targets(*unpack_text(x))
            counts += torch.bincount(t[t != IGNORE], minlength=len(counts))
        was_training = self.training
        self.eval()
        nll, uni, n = 0.0, 0.0, 0
        for x, _ in batches("val"):
            logits, targets = self._next_token_logits(x.to(self.device))
            nll += F.cross_entropy(logits.double(), targets, reduction="sum").item()
            uni += unigram_nll(counts, targets.cpu()).item()
            n += len(targets)
        self.train(was_training)
        n = max(n, 1)
        return {"perplexity": math.exp(nll / n), "unigram_perplexity": math.exp(uni / n)}
