"""I-JEPA (Assran et al., 2023): joint-embedding predictive architecture.

From one context block of an image, a narrow transformer predictor predicts the
representations of M target blocks, which an EMA target encoder computes on the whole
image; the loss is the squared L2 distance in representation space (the paper's Eq. 1).
No augmentation beyond the crop: the task is set by where the blocks lie. Block sampling as
the paper's multi-block collator: one target size and one context size per batch (drawn
from scale and aspect ranges), a place per image and block; the target patches are removed
from the context block.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import Strict
from pipeline.modalities.image.views import random_resized_crop, to_float
from pipeline.methods._ema import MomentumMethod
from pipeline.methods._masking import encode_with_padding, rectangle_indices, require_vit, upcast
from pipeline.registry import METHODS
from pipeline.models.vit import LN_EPS, block, sincos_pos_embed


def ijepa_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's ``1/M sum_i sum_{j in B_i} ||s_hat_j - s_j||_2^2``, divided by the block size
    and the width D (constants within a batch, whose blocks share one size): the mean over
    blocks, images, patches and channels of the squared error.

    pred, target: ``[M, N, P, D]`` (M target blocks of P patches of N images).
    """
    return (upcast(pred) - upcast(target)).pow(2).mean()


def block_size(grid: int, scale: tuple[float, float], aspect: tuple[float, float], rng: random.Random) -> tuple[int, int]:
    """The collator's ``_sample_block_size``: area ``U(scale) * L`` patches, aspect ``U(aspect)``
    (height / width), rounded, kept below the grid (as the reference: even a context of scale 1
    loses a row and a column). Python ints from the method's own RNG: shapes
    are known on the host without reading a tensor."""
    area = rng.uniform(*scale) * grid * grid
    ratio = rng.uniform(*aspect)
    h = min(max(round(math.sqrt(area * ratio)), 1), grid - 1 if grid > 1 else 1)
    w = min(max(round(math.sqrt(area / ratio)), 1), grid - 1 if grid > 1 else 1)
    return h, w


class Predictor(nn.Module):
    """The I-JEPA predictor: encoder tokens -> a narrow ViT (its own width, sin-cos positions)
    over the context tokens plus one learned mask token per target position -> projected back
    to the encoder width at the target positions."""

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, grid: int):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as the reference code
        self.register_buffer("pos", sincos_pos_embed(grid, dim)[0, 1:])  # [L, dim]
        self.blocks = nn.ModuleList(block(dim, heads, 4 * dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.proj = nn.Linear(dim, enc_dim)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, context_pad: torch.Tensor,
                target_idx: torch.Tensor) -> torch.Tensor:
        """context ``[N, 1 + C, enc_dim]`` (class token + context tokens), context_idx ``[N, C]``,
        context_pad bool ``[N, C]``, target_idx ``[N, P]`` -> predictions ``[N, P, enc_dim]``."""
        h = self.embed(context)
        h = torch.cat([h[:, :1], h[:, 1:] + self.pos[context_idx]], dim=1)
        queries = self.mask_token.to(h.dtype) + self.pos[target_idx]  # [N, P, dim]
        x = torch.cat([h, queries], dim=1)
        pad = torch.cat([torch.zeros_like(context_pad[:, :1]), context_pad,
                         torch.zeros_like(target_idx, dtype=torch.bool)], dim=1)
        for layer in self.blocks:
            x = layer(x, src_key_padding_mask=pad)
        return self.proj(self.norm(x[:, -target_idx.shape[1]:]))


@METHODS.register
class IJEPA(MomentumMethod):
    name = "ijepa"
    ema_targets = {"target_encoder": "encoder"}

    class Params(Strict):
        num_targets: int = Field(4, ge=1)  # paper: M = 4 target blocks
        target_scale: list[float] = Field(default_factory=lambda: [0.15, 0.2], min_length=2, max_length=2)  # paper
        target_aspect: list[float] = Field(default_factory=lambda: [0.75, 1.5], min_length=2, max_length=2)  # paper
        context_scale: list[float] = Field(default_factory=lambda: [0.85, 1.0], min_length=2, max_length=2)  # paper, aspect 1
        predictor_dim: int = Field(64, ge=4)  # paper: 384 for ViT-H (its 1280): narrower than the encoder
        predictor_depth: int = Field(2, ge=1)  # paper: 12
        predictor_heads: int = Field(2, ge=1)
        momentum: float = Field(0.996, ge=0, le=1)  # paper: 0.996 -> 1.0, linear
        momentum_final: float = Field(1.0, ge=0, le=1)
        crop_min_scale: float = Field(0.3, gt=0, le=1)  # paper: RandomResizedCrop(scale=(0.3, 1.0)), no flip, no jitter

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        require_vit(encoder, self.name)
        vit = encoder.backbone
        if params.predictor_dim % params.predictor_heads or params.predictor_dim % 4:
            from pipeline.errors import UserError
            raise UserError(f"ijepa.predictor_dim ({params.predictor_dim}) must be divisible by ijepa.predictor_heads "
                            f"({params.predictor_heads}) and by 4 (sin-cos positions)")
        self.predictor = Predictor(vit.dim, params.predictor_dim, params.predictor_depth, params.predictor_heads, vit.grid)
        self.make_targets()
        self.block_rng = random.Random(seed)  # block sizes, one per batch (host-side: no device read)

    def sample_blocks(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> target indices ``[M, N, P]``, context indices ``[N, C]`` and the context's padding
        bool ``[N, C]`` (True where a context patch lies in a target block: removed)."""
        p, grid, gen = self.params, self.encoder.backbone.grid, self.views.gen
        th, tw = block_size(grid, tuple(p.target_scale), tuple(p.target_aspect), self.block_rng)
        ch, cw = block_size(grid, tuple(p.context_scale), (1.0, 1.0), self.block_rng)

        def places(h: int, w: int, count: int) -> torch.Tensor:
            u = torch.rand(2, count, n, generator=gen, device=device)
            return rectangle_indices(grid, (u[0] * (grid - h + 1)).floor().long().flatten(),
                                     (u[1] * (grid - w + 1)).floor().long().flatten(), h, w).view(count, n, h * w)

        targets = places(th, tw, p.num_targets)  # [M, N, P]
        context = places(ch, cw, 1)[0]  # [N, C]
        in_target = torch.zeros(n, grid * grid, dtype=torch.bool, device=device)
        in_target.scatter_(1, targets.permute(1, 0, 2).reshape(n, -1), True)
        return targets, context, torch.gather(in_target, 1, context)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        vit, p = self.encoder.backbone, self.params
        x = random_resized_crop(to_float(images), (p.crop_min_scale, 1.0), (3 / 4, 4 / 3), 0.0, self.views.gen)
        x = self.encoder.normalise(x)
        n = x.shape[0]
        targets, context_idx, context_pad = self.sample_blocks(n, x.device)
        with torch.no_grad():  # targets: the EMA encoder on the whole image, layer-normed per token (the reference)
            h = self.target_encoder.backbone.tokens(x)[:, 1:]
            h = F.layer_norm(h.float(), (h.shape[-1],))  # [N, L, D]
            d = h.shape[-1]
            target = torch.stack([torch.gather(h, 1, t.unsqueeze(-1).expand(-1, -1, d)) for t in targets])  # [M, N, P, D]
        tokens = vit.embed(x) + vit.patch_pos
        tokens = torch.gather(tokens, 1, context_idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        context = encode_with_padding(vit, tokens, context_pad)  # [N, 1 + C, D]
        m = p.num_targets  # the reference repeats the context once per target block
        pred = self.predictor(context.repeat(m, 1, 1), context_idx.repeat(m, 1), context_pad.repeat(m, 1), targets.flatten(0, 1))
        return {"loss": ijepa_loss(pred.view_as(target), target)}

    def momentum(self, progress: float) -> float:
        # paper: linear from 0.996 to 1 over training
        return self.params.momentum + (self.params.momentum_final - self.params.momentum) * progress

    def extra_state(self) -> dict:
        return super().extra_state() | {"block_rng": self.block_rng.getstate()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.block_rng.setstate(state["block_rng"])
