"""Patch masks (and two small helpers) for the masked-modelling methods (SimMIM, iBOT,
DINOv2-style, I-JEPA, MSN), built on the training device with torch ops only: no host syncs, no numpy, no boolean
indexing, so a step never waits for the GPU. Patches are numbered row-major over the
``grid x grid`` patch grid (the ViT's token order).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.errors import UserError


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Losses run in at least float32 (autocast gives bfloat16) and keep float64 (the tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def require_vit(encoder, method: str) -> None:
    """These methods mask or drop patch tokens: they need the ViT encoder."""
    if not getattr(encoder, "has_patch_tokens", False):  # ours or timm's ViT (pipeline/models/standard.py)
        raise UserError(f"{method} needs a ViT encoder, got encoder.arch {encoder.params.arch!r}: "
                        f"set `encoder: {{arch: vit}}` under `{method}:` in params.yaml (or arch vit_small_patch16_224)")


def random_patch_mask(n: int, length: int, ratio: torch.Tensor | float, gen: torch.Generator,
                      device: torch.device) -> torch.Tensor:
    """Random patch masking (SimMIM, MAE): bool ``[N, L]``, True = masked.

    ``ratio`` is a float or a per-image ``[N]`` tensor; image i gets exactly
    ``round(ratio_i * L)`` masked patches, the ones whose uniform noise ranks lowest.
    """
    ranks = torch.rand(n, length, generator=gen, device=device).argsort(dim=1).argsort(dim=1)  # [N, L] a permutation
    # a float ratio stays a Python number: a tensor made from it would be a host-to-device copy
    count = (ratio * length).round().reshape(-1, 1) if torch.is_tensor(ratio) else round(ratio * length)
    return ranks < count


def block_mask(n: int, grid: int, ratio: torch.Tensor, min_patches: float, min_aspect: float, tries: int,
               gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """BEiT's blockwise masking (its Algorithm 1, as iBOT and DINOv2 use it), vectorised over
    the batch: bool ``[N, grid * grid]``.

    ratio: ``[N]`` share of patches to mask per image (0 = no mask). ``tries`` rectangles per
    image are drawn one after another, each of area ``U(min_patches, budget left)`` and aspect
    ``exp(U(log a, -log a))`` at a uniform place; as in the reference a rectangle is accepted
    only when it adds new patches without exceeding the budget ``round(ratio * L)``. The
    reference loops until the budget is met or a block fails 10 placements; a fixed number of
    tries keeps the count off the host (masks come out a little under budget more often).
    """
    length = grid * grid
    budget = (ratio * length).round()  # [N]
    mask = torch.zeros(n, grid, grid, dtype=torch.bool, device=device)
    coord = torch.arange(grid, device=device)
    log_a = math.log(min_aspect)
    for _ in range(tries):
        left_budget = budget - mask.flatten(1).sum(1)  # [N]
        u = torch.rand(n, 4, generator=gen, device=device)
        area = min_patches + u[:, 0] * (left_budget - min_patches).clamp(min=0)
        aspect = torch.exp(log_a + u[:, 1] * (-2 * log_a))
        h = (area * aspect).sqrt().round().clamp(1, grid - 1)  # the reference keeps blocks inside the grid
        w = (area / aspect).sqrt().round().clamp(1, grid - 1)
        top = (u[:, 2] * (grid - h + 1)).floor()
        left = (u[:, 3] * (grid - w + 1)).floor()
        rows = (coord >= top[:, None]) & (coord < (top + h)[:, None])  # [N, grid]
        cols = (coord >= left[:, None]) & (coord < (left + w)[:, None])
        new = mask | (rows[:, :, None] & cols[:, None, :])
        grown = new.flatten(1).sum(1)  # [N]
        accept = (grown > mask.flatten(1).sum(1)) & (grown <= budget)
        mask = torch.where(accept[:, None, None], new, mask)
    return mask.flatten(1)


def masked_image_ratios(n: int, ratio_range: tuple[float, float], mask_probability: float, gen: torch.Generator,
                        device: torch.device) -> torch.Tensor:
    """iBOT / DINOv2: each image is masked with probability ``mask_probability``, at a ratio
    drawn from ``U(ratio_range)``; the others get ratio 0 (no masked patch). ``[N]`` float."""
    u = torch.rand(n, 2, generator=gen, device=device)
    low, high = ratio_range
    return torch.where(u[:, 0] < mask_probability, low + (high - low) * u[:, 1], torch.zeros((), device=device))


def rectangle_indices(grid: int, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Patch indices of one ``h x w`` rectangle per image at ``top``, ``left`` (``[N]`` long)
    -> ``[N, h * w]`` long, row-major inside the rectangle. Equal sizes in a batch (I-JEPA's
    collator draws one size per batch) keep the shapes static."""
    dy = torch.arange(h, device=top.device).repeat_interleave(w)  # [h*w]
    dx = torch.arange(w, device=top.device).repeat(h)
    return (top[:, None] + dy) * grid + left[:, None] + dx


def encode_with_padding(vit: nn.Module, tokens: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Like ``ViT.encode`` but attention ignores the tokens where ``pad`` is True.

    tokens: ``[N, K, D]`` patch tokens that carry their positions; pad: bool ``[N, K]``.
    Returns ``[N, 1 + K, D]`` (class token first). A static K with a padding mask stands in
    for I-JEPA's variable-length context (its length would have to be read on the host).
    The class token is never padded, so every row attends to something.
    """
    return vit.encode(tokens, pad)  # each ViT (ours, timm's) masks its own attention (pipeline/models)
