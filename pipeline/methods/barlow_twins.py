"""Barlow Twins (Zbontar et al., 2021): make the cross-correlation of two views' embeddings
the identity, so each dimension is invariant to the augmentation (diagonal 1) and carries
information the others do not (off-diagonal 0). No negatives, no target network."""

from __future__ import annotations

import torch
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp

BN_EPS = 1e-5  # the paper's affine-free BatchNorm1d


def _standardize(z: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` -> zero mean, unit (biased) variance per dimension over the N samples."""
    return (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + BN_EPS)


def off_diagonal(c: torch.Tensor) -> torch.Tensor:
    """``[D, D]`` -> ``[D * (D - 1)]``: the off-diagonal entries in row order, as ``c[~eye]``
    but by a strided view (boolean indexing syncs the host on CUDA); contiguous, so sums
    over it add in the same order as over ``c[~eye]``."""
    d = c.shape[0]
    return c.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float, scale: float) -> torch.Tensor:
    """``scale * (sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2)``.

    z1, z2: ``[N, D]`` embeddings of two views of the same N images on this rank. The
    batch statistics and ``C = z1n^T z2n / N_global`` (``[D, D]``) are over the global batch
    (all ranks gathered, gradients flowing back to each rank's slice), as the paper's
    synchronised BatchNorm and all-reduced C do. Every rank computes the same loss.
    """
    z1, z2 = dist.gather_with_grad(z1.float()), dist.gather_with_grad(z2.float())  # [N*W, D]
    # float32 matmul even under autocast: C_ii near 1 needs more digits than bfloat16 has
    with torch.autocast(z1.device.type, enabled=False):
        c = _standardize(z1).T @ _standardize(z2) / z1.shape[0]  # [D, D]
    on_diag = (c.diagonal() - 1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


@METHODS.register
class BarlowTwins(Method):
    name = "barlow_twins"

    class Params(Strict):
        lambd: float = Field(0.0051, ge=0)
        scale_loss: float = Field(0.1, gt=0)  # solo-learn for a 2048-d projector (the 8192-d original: 0.024)
        hidden_dim: int = Field(2048, ge=1)
        projection_dim: int = Field(2048, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        # three linear layers, BN + ReLU after the first two (the paper's projector)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=3)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.two_views(images)
        z1, z2 = self.projector(self.encoder(views)).chunk(2)
        return {"loss": barlow_twins_loss(z1, z2, self.params.lambd, self.params.scale_loss)}
