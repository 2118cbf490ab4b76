"""SimMIM (Xie et al., 2022): a simple framework for masked image modeling.

Random patches are masked (their embeddings replaced by one learned mask token), the ViT
encodes the whole sequence, and a single linear layer regresses the raw pixels of every
patch from its final token; the loss is L1 on the masked patches only (the paper's Eq. 1).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from pipeline.config import Strict
from pipeline.modalities.image.views import random_resized_crop, to_float
from pipeline.methods._base import Method
from pipeline.methods._masking import random_patch_mask, require_vit, upcast
from pipeline.registry import METHODS
from pipeline.models.vit import patchify


def simmim_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 between predicted and true pixels, averaged over the pixels of masked patches.

    pred, target: ``[N, L, P]`` (P = patch pixels x channels); mask: bool ``[N, L]``, True
    where masked. The paper's ``1/Omega(x_M) * ||y_M - x_M||_1`` over the batch.
    """
    per_patch = (upcast(pred) - upcast(target)).abs().mean(dim=-1)  # [N, L]
    m = mask.to(per_patch.dtype)
    return (per_patch * m).sum() / m.sum().clamp(min=1)


@METHODS.register
class SimMIM(Method):
    name = "simmim"

    class Params(Strict):
        # Paper (ViT-B): mask ratio 0.6 of 32 px mask patches on 16 px tokens; here masks are drawn per
        # token (4 px patches of a 28 px image: a 7x7 grid that 2x2 token groups do not tile).
        mask_ratio: float = Field(0.6, gt=0, lt=1)
        crop_min_scale: float = Field(0.67, gt=0, le=1)  # paper: RandomResizedCrop(scale=(0.67, 1)) + flip only

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        require_vit(encoder, self.name)
        vit = encoder.backbone
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as the reference code
        # the paper's one-layer prediction head: a 1x1 convolution = a linear map per token
        self.head = nn.Linear(vit.dim, vit.patch_size**2 * vit.in_channels)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        vit = self.encoder.backbone
        # SimMIM's augmentation is crop + flip only (no colour jitter)
        x = random_resized_crop(to_float(images), (self.params.crop_min_scale, 1.0), (3 / 4, 4 / 3), 0.5, self.views.gen)
        x = self.encoder.normalise(x)  # targets are the normalised pixels (the reference's input)
        mask = random_patch_mask(x.shape[0], vit.num_patches, self.params.mask_ratio, self.views.gen, x.device)
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), vit.embed(x))
        pred = self.head(vit.encode(tokens + vit.patch_pos)[:, 1:])  # [N, L, P]
        return {"loss": simmim_loss(pred, patchify(x, vit.patch_size), mask)}
