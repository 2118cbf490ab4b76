"""Text "views" for the representation diagnostics: independent random maskings of packed entries.

Images get two augmented views (``pipeline.modalities.image.views.ViewMaker``); an entry of text gets two
random maskings, as MLM corrupts its input: each real, non-special token becomes ``[MASK]``
with probability ``mask_p``, drawn per call from one seeded generator. Padding and the
special tokens (``[CLS]``, ``[SEP]``, ...) are never masked, so both views keep the entry's
length and frame.
"""

from __future__ import annotations

import torch

from pipeline.modalities.text.tokenizer import SPECIALS

MASK_ID = SPECIALS.index("[MASK]")
FIRST_REGULAR_ID = len(SPECIALS)  # ids below it are the special tokens


class TextViews:
    """``views(x int64 [N, 2, L], view=i) -> int64 [N, 2, L]``: ``x`` with each real non-special
    token id replaced by ``[MASK]`` with probability ``mask_p`` (attention row unchanged).
    Every call draws a fresh masking from the generator seeded with ``seed``; ``view`` is
    accepted for ``ViewMaker``'s interface and does not change the distribution."""

    def __init__(self, mask_p: float, seed: int, device: torch.device):
        if not 0.0 <= mask_p <= 1.0:
            raise ValueError(f"mask_p must be in [0, 1], got {mask_p}")
        self.mask_p = mask_p
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def __call__(self, x: torch.Tensor, view: int = 0) -> torch.Tensor:
        if x.dtype != torch.int64 or x.dim() != 3 or x.shape[1] != 2:
            raise ValueError(f"text views need packed int64 [N, 2, L] entries, got {x.dtype} {tuple(x.shape)}")
        ids, att = x[:, 0], x[:, 1]
        maskable = att.bool() & (ids >= FIRST_REGULAR_ID)
        draw = torch.rand(ids.shape, generator=self.gen, device=x.device) < self.mask_p
        out = x.clone()
        out[:, 0] = torch.where(maskable & draw, torch.full_like(ids, MASK_ID), ids)
        return out
