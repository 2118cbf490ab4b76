"""BERT masking rule and the MLM / CLM losses, as pure functions (the methods in
``pipeline/methods/mlm.py`` and ``clm.py`` wrap them; tests check them against naive loops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # cross_entropy's default ignore_index: labels that carry no loss


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, special_ids: list[int], mask_id: int,
                vocab_size: int, generator: torch.Generator, p: float = 0.15,
                mask_frac: float = 0.8, random_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 rule.

    ids ``[N, L]`` int64, attention ``[N, L]`` (1 = real token, 0 = padding).
    Each real, non-special token is chosen with probability ``p``; of the chosen, ``mask_frac``
    (80%) become ``mask_id``, ``random_frac`` (10%) a uniformly random non-special token, the
    rest (10%) stay unchanged.
    Returns ``(inputs [N, L], labels [N, L])`` on ``ids.device``: labels hold the original id at
    chosen positions and ``IGNORE`` everywhere else. All randomness comes from ``generator``
    (a CPU generator: the same masks on every device), drawn for every position so the stream
    does not depend on the token values.
    """
    device = ids.device
    special = torch.tensor(sorted(set(special_ids)), dtype=ids.dtype, device=device)
    eligible = attention.bool() & ~torch.isin(ids, special)
    u_choose = torch.rand(ids.shape, generator=generator).to(device)
    u_kind = torch.rand(ids.shape, generator=generator).to(device)
    normal = torch.ones(vocab_size, dtype=torch.bool)
    normal[special.cpu()] = False
    normal = normal.nonzero().squeeze(1)  # the non-special ids
    rnd = normal[torch.randint(len(normal), ids.shape, generator=generator)].to(device)
    chosen = eligible & (u_choose < p)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    inputs = ids.clone()
    inputs[chosen & (u_kind < mask_frac)] = mask_id
    to_random = chosen & (u_kind >= mask_frac) & (u_kind < mask_frac + random_frac)
    inputs[to_random] = rnd[to_random]
    return inputs, labels


def token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labels that are not ``IGNORE``; 0 (not NaN) when there are none.

    logits ``[..., V]``, labels ``[...]`` -> scalar (float32 even under autocast).
    """
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE,
                            reduction="sum")
    return total / (labels != IGNORE).sum().clamp(min=1)


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over chosen tokens only.

    logits ``[N, L, V]``, labels ``[N, L]`` (``IGNORE`` where not chosen) -> scalar.
    """
    return token_loss(logits, labels)


def next_token_targets(ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """``[N, L] -> [N, L - 1]``: the target of position t is token t+1, ``IGNORE`` where that is padding."""
    return ids[:, 1:].masked_fill(~attention[:, 1:].bool(), IGNORE)


def clm_loss(logits: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts token t+1; padded targets carry no loss.

    logits ``[N, L, V]``, ids ``[N, L]``, attention ``[N, L]`` (1 = real) -> scalar.
    """
    return token_loss(logits[:, :-1], next_token_targets(ids, attention))


def unigram_nll(counts: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of ``targets`` (any shape, ``IGNORE`` skipped) under an
    add-one (Laplace) smoothed unigram model: ``p(w) = (counts[w] + 1) / (sum(counts) + V)``,
    ``counts [V]`` -> float64 scalar."""
    logp = (counts.double() + 1).log() - (counts.double().sum() + len(counts)).log()
    t = targets[targets != IGNORE]
    return -logp[t].sum()
