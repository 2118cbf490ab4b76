"""Masked language modelling (BERT; Devlin et al., 2019): a bidirectional Transformer
predicts 15% of the tokens, chosen at random, from the corrupted entry.

Of the chosen tokens 80% become [MASK], 10% a random token and 10% stay as they are (so
the model cannot assume the input token is wrong only where it sees [MASK]); [CLS], [SEP]
and padding are never chosen, and the loss is the cross-entropy on the chosen tokens only,
through the LM head tied to the token embedding. Features: the mean over real tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from pipeline.config import Strict
from pipeline.modalities.text.tokenizer import SPECIALS
from pipeline.methods._base import Batches, TextMethod
from pipeline.registry import METHODS
from pipeline.modalities.text.encoder import unpack_text
from pipeline.modalities.text.objectives import IGNORE, mask_tokens, token_loss

SPECIAL_IDS = list(range(len(SPECIALS)))  # [PAD] [UNK] [CLS] [SEP] [MASK]: never chosen, never a random replacement
MASK_ID = SPECIALS.index("[MASK]")
HELD_OUT_SEED = 0  # the held-out masks: the same for every run, so runs compare on the same predictions


@METHODS.register
class MLM(TextMethod):
    name = "mlm"
    causal = False

    class Params(Strict):
        mask_prob: float = Field(0.15, gt=0, lt=1)  # BERT: 15% of the (non-special, real) tokens are predicted
        mask_token_frac: float = Field(0.8, ge=0, le=1)  # BERT: 80% of those are replaced by [MASK],
        random_token_frac: float = Field(0.1, ge=0, le=1)  # 10% by a random token; the other 10% stay unchanged

        @model_validator(mode="after")
        def _fractions(self) -> "MLM.Params":
            if self.mask_token_frac + self.random_token_frac > 1:
                raise ValueError(f"mask_token_frac + random_token_frac ({self.mask_token_frac} + {self.random_token_frac}) "
                                 "must be at most 1 (the rest stay unchanged)")
            return self

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.gen = torch.Generator().manual_seed(seed)  # CPU: the same masks on every device

    def _mask(self, ids: torch.Tensor, att: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        return mask_tokens(ids, att, SPECIAL_IDS, MASK_ID, self.encoder.vocab_size, gen, p.mask_prob,
                           p.mask_token_frac, p.random_token_frac)

    def _chosen_logits(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed ``[N, 2, L]`` -> ``(logits [K, V], labels [K])`` at the K chosen tokens: the LM
        head (the largest matmul) runs on those only."""
        ids, att = unpack_text(x)
        inputs, labels = self._mask(ids, att, gen)
        backbone = self.encoder.backbone
        chosen = labels != IGNORE
        return backbone.logits(backbone(inputs, att)[chosen]), labels[chosen]

    def training_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, labels = self._chosen_logits(x, self.gen)
        return {"loss": token_loss(logits, labels)}

    @torch.no_grad()
    def held_out_metrics(self, batches: Batches) -> dict[str, float]:
        """On "val", masked with a fixed seed: ``masked_accuracy`` (top-1 on the chosen tokens)
        and ``perplexity`` (exp of their mean cross-entropy)."""
        was_training, gen = self.training, torch.Generator().manual_seed(HELD_OUT_SEED)
        self.eval()
        nll, correct, n = 0.0, 0, 0
        for x, _ in batches("val"):
            logits, labels = self._chosen_logits(x.to(self.device), gen)
            nll += F.cross_entropy(logits.double(), labels, reduction="sum").item()
            correct += int((logits.argmax(1) == labels).sum())
            n += len(labels)
        self.train(was_training)
        return {"masked_accuracy": correct / max(n, 1), "perplexity": math.exp(nll / max(n, 1))}

    def extra_state(self) -> dict:
        return super().extra_state() | {"mask_gen": self.gen.get_state()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.gen.set_state(state["mask_gen"])
