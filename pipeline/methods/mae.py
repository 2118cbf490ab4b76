"""MAE (He et al., 2022): mask 75% of the patches, encode only the visible ones with the
ViT, reconstruct the pixels of the masked ones with a small transformer decoder.

The target of a patch is its own pixels normalised by their mean and variance (the paper's
"normalised pixels", its best variant); the loss is the MSE on masked patches only.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from pipeline.config import Strict
from pipeline.modalities.image.views import random_resized_crop, to_float
from pipeline.errors import UserError
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.vit import Transformer, patchify

CROP_RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default, which MAE uses
HFLIP = 0.5  # RandomHorizontalFlip()


def random_masking(n: int, length: int, ratio: float, gen: torch.Generator, device: torch.device):
    """Per-image random masking as in the paper: shuffle the patches by argsort of uniform
    noise, keep the first ``length - round(ratio * length)``.

    Returns ``keep [N, K]`` (indices of visible patches, in shuffled order), ``mask [N, L]``
    (1.0 masked, 0.0 visible; exactly ``round(ratio * L)`` ones per row) and ``restore [N, L]``
    (for each patch, its position in the shuffled order: undoes the shuffle).
    """
    n_keep = length - round(ratio * length)
    noise = torch.rand(n, length, generator=gen, device=device)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    mask = torch.ones(n, length, device=device)
    mask[:, :n_keep] = 0
    return shuffle[:, :n_keep], torch.gather(mask, 1, restore), restore


def normalized_pixel_target(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``[N, L, P]`` -> ``[N, L, P]``: each patch minus its mean over its P values, divided by
    sqrt(variance + eps). The variance is the unbiased one (``torch.var``), as in the
    reference code."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch, averaged over the masked patches only.

    pred, target: ``[N, L, P]``; mask: ``[N, L]`` with 1 for masked patches, 0 for visible.
    """
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # [N, L]
    return (per_patch * mask).sum() / mask.sum()


class Decoder(nn.Module):
    """MAE's lightweight decoder: encoder tokens -> pixels of every patch.

    Visible tokens are projected to the decoder width, a shared learned mask token fills the
    masked positions, the shuffle is undone, fixed sin-cos positions are added and a few
    pre-norm transformer blocks run over all ``1 + L`` tokens.
    """

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, mlp_ratio: float, grid: int, patch_dim: int):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mask_token, std=0.02)  # as the reference code
        self.transformer = Transformer(grid, depth, heads, dim, int(dim * mlp_ratio), "sincos")
        self.pred = nn.Linear(dim, patch_dim)

    def forward(self, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        """latent ``[N, 1 + K, enc_dim]`` (class token + visible tokens in shuffled order),
        restore ``[N, L]`` -> predicted patches ``[N, L, patch_dim]``."""
        h = self.embed(latent)
        n, _, d = h.shape
        length = restore.shape[1]
        shuffled = torch.cat([h[:, 1:], self.mask_token.expand(n, length - h.shape[1] + 1, d)], dim=1)  # [N, L, d]
        ordered = torch.gather(shuffled, 1, restore.unsqueeze(-1).expand(-1, -1, d))
        out = self.transformer(torch.cat([h[:, :1], ordered], dim=1))  # adds positions, blocks, LayerNorm
        return self.pred(out[:, 1:])


@METHODS.register
class MAE(Method):
    name = "mae"

    class Params(Strict):
        mask_ratio: float = Field(0.75, gt=0, lt=1)  # paper: 75% masked
        # Decoder: the paper's is half the encoder's width (512 of ViT-L's 1024) with 32-dim
        # heads and a third of its depth (8 of 24 blocks). For the default 128-d, 4-block ViT:
        # width 64 with 2 heads of 32 dims, 2 blocks.
        decoder_dim: int = Field(64, ge=8)
        decoder_depth: int = Field(2, ge=1)
        decoder_heads: int = Field(2, ge=1)
        decoder_mlp_ratio: float = Field(4.0, gt=0)  # as the paper's decoder blocks
        norm_pix_loss: bool = True  # paper: normalised-pixel target (its Table 1d best)
        crop_min_scale: float = Field(0.2, gt=0, le=1)  # paper: RandomResizedCrop(scale=(0.2, 1.0)) + flip

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        if not encoder.has_patch_tokens:
            raise UserError(
                f"mae needs a ViT encoder, got encoder.arch {encoder.params.arch!r}: set `encoder: {{arch: vit}}` (or vit_small_patch16_224) under `mae:` in params.yaml"
            )
        if params.decoder_dim % params.decoder_heads or params.decoder_dim % 4:
            raise UserError(
                f"mae.decoder_dim ({params.decoder_dim}) must be divisible by mae.decoder_heads ({params.decoder_heads}) "
                "and by 4 (sin-cos positions)"
            )
        vit = encoder.backbone
        self.decoder = Decoder(vit.dim, params.decoder_dim, params.decoder_depth, params.decoder_heads,
                               params.decoder_mlp_ratio, vit.grid, vit.patch_size**2 * vit.in_channels)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        vit = self.encoder.backbone
        x = random_resized_crop(to_float(images), (self.params.crop_min_scale, 1.0), CROP_RATIO, HFLIP, self.views.gen)
        x = self.encoder.normalise(x)
        keep, mask, restore = random_masking(x.shape[0], vit.num_patches, self.params.mask_ratio, self.views.gen, x.device)
        pred = self.decoder(vit.encode_subset(x, keep), restore)
        target = patchify(x, vit.patch_size)
        if self.params.norm_pix_loss:
            target = normalized_pixel_target(target)
        return {"loss": mae_loss(pred, target, mask)}
