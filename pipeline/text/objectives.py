"""BERT masking rule and the MLM / CLM losses, as pure functions.

Kept out of ``pipeline/methods/`` because every module there is auto-registered as an
image method and tested with images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # cross_entropy's default ignore_index: labels that carry no loss


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, special_ids: list[int], mask_id: int,
                vocab_size: int, generator: torch.Generator, p: float = 0.15,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 rule.

    ids ``[N, L]`` int64, attention ``[N, L]`` (1 = real token, 0 = padding).
    Each real, non-special token is chosen with probability ``p``; of the chosen, 80% become
    ``mask_id``, 10% a uniformly random non-special token, 10% stay unchanged.
    Returns ``(inputs [N, L], labels [N, L])``: labels hold the original id at chosen positions
    and ``IGNORE`` everywhere else. All randomness comes from ``generator`` (deterministic).
    """
    special = torch.tensor(sorted(set(special_ids)), dtype=ids.dtype)
    eligible = attention.bool() & ~torch.isin(ids, special)
    # Draw every random number for every position, so the stream does not depend on the data.
    u_choose = torch.rand(ids.shape, generator=generator)
    u_kind = torch.rand(ids.shape, generator=generator)
    normal = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids)], dtype=ids.dtype)
    rnd = normal[torch.randint(len(normal), ids.shape, generator=generator)]
    chosen = eligible & (u_choose < p)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    inputs = ids.clone()
    inputs[chosen & (u_kind < 0.8)] = mask_id
    to_random = chosen & (u_kind >= 0.8) & (u_kind < 0.9)
    inputs[to_random] = rnd[to_random]
    return inputs, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over chosen tokens only.

    logits ``[N, L, V]``, labels ``[N, L]`` (``IGNORE`` where not chosen) -> scalar.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def clm_loss(logits: torch.Tensor, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: position t predicts token t+1; padded targets carry no loss.

    logits ``[N, L, V]``, ids ``[N, L]``, attention ``[N, L]`` (1 = real) -> scalar.
    """
    target = ids[:, 1:].masked_fill(~attention[:, 1:].bool(), IGNORE)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
