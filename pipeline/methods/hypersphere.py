"""Alignment and uniformity on the hypersphere as the objective (Wang & Isola, 2020,
"Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", Sec. 5 / its Eq. 2-3 as a loss).

The two properties the paper proves InfoNCE optimises asymptotically, optimised directly:
positives close (alignment), the embeddings spread over the sphere (uniformity, the log of
the mean Gaussian potential over pairs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def align_loss(x: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``x, y [N, D]`` unit positives -> ``E ||x - y||^alpha`` (the paper's L_align)."""
    return (x - y).norm(dim=1).pow(alpha).mean()


def uniform_loss(x: torch.Tensor, t: float) -> torch.Tensor:
    """``x [M, D]`` unit embeddings -> ``log E_{i<j} exp(-t ||x_i - x_j||^2)`` (the paper's L_uniform)."""
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()


def hypersphere_loss(z1: torch.Tensor, z2: torch.Tensor, alpha: float, t: float, align_weight: float,
                     uniform_weight: float) -> torch.Tensor:
    """The paper's objective (its code's ``align_w * align + unif_w * (unif(x) + unif(y)) / 2``).

    z1, z2: ``[N, D]`` this rank's projections of two views, L2-normalised here. Alignment is
    over this rank's pairs; uniformity over the pairs of the global batch (gathered with
    gradient), so every rank computes the same uniformity term.
    """
    # float32 at least, outside autocast: torch.pdist has no bfloat16 kernel, and exp(-t d^2)
    # averaged over all pairs wants more than bfloat16's 8 bits
    with torch.autocast(z1.device.type, enabled=False):
        dtype = torch.promote_types(z1.dtype, torch.float32)
        x, y = F.normalize(z1.to(dtype), dim=1), F.normalize(z2.to(dtype), dim=1)
        x_all, y_all = dist.gather_with_grad(x), dist.gather_with_grad(y)
        return align_weight * align_loss(x, y, alpha) + uniform_weight * (uniform_loss(x_all, t) + uniform_loss(y_all, t)) / 2


@METHODS.register
class Hypersphere(Method):
    name = "hypersphere"

    class Params(Strict):
        # the paper's defaults (ssnl/align_uniform: align_alpha 2, unif_t 2, weights 1 and 1)
        alpha: float = Field(2.0, gt=0)
        t: float = Field(2.0, gt=0)
        align_weight: float = Field(1.0, ge=0)
        uniform_weight: float = Field(1.0, ge=0)
        # the paper's encoders end in a 128-d normalised output; SimCLR's head sized as simclr here
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(128, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z1, z2 = self.projector(self.encoder(self.two_views(images))).chunk(2)
        p = self.params
        return {"loss": hypersphere_loss(z1, z2, p.alpha, p.t, p.align_weight, p.uniform_weight)}
