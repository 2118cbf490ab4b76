"""VICReg (Bardes et al., 2022): Variance-Invariance-Covariance regularisation.

Two views' embeddings are pulled together (invariance, MSE) while each branch keeps every
dimension's standard deviation above 1 (variance hinge: no collapse) and its dimensions
decorrelated (covariance: no redundancy). No negatives, no target network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods.barlow_twins import off_diagonal
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def _variance(z: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean over dimensions of ``relu(1 - sqrt(Var_n z_d + eps))``. z: ``[N, D]``."""
    return F.relu(1 - torch.sqrt(z.var(dim=0) + eps)).mean()


def _covariance(z: torch.Tensor) -> torch.Tensor:
    """Sum of squared off-diagonal covariances divided by D. z: ``[N, D]``."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    with torch.autocast(z.device.type, enabled=False):  # float32 even under autocast
        cov = z.T @ z / (n - 1)  # [D, D]
    return off_diagonal(cov).pow(2).sum() / d


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float, std_coeff: float, cov_coeff: float,
                eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``sim_coeff * inv + std_coeff * var + cov_coeff * cov``.

    z1, z2: ``[N, D]`` embeddings of two views of the same N images on this rank, gathered
    over all ranks (gradients flow back to each rank's slice) so the statistics are those of
    the global batch. inv = mean squared error over all N*D entries; var = the two branches'
    ``_variance`` averaged; cov = the two branches' ``_covariance`` summed (the paper's
    definitions). Returns the loss and the three unweighted terms (for logging).
    """
    z1, z2 = dist.gather_with_grad(z1.float()), dist.gather_with_grad(z2.float())  # [N*W, D]
    inv = F.mse_loss(z1, z2)
    var = (_variance(z1, eps) + _variance(z2, eps)) / 2
    cov = _covariance(z1) + _covariance(z2)
    loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
    return loss, {"invariance": inv.detach(), "variance": var.detach(), "covariance": cov.detach()}


@METHODS.register
class VICReg(Method):
    name = "vicreg"

    class Params(Strict):
        sim_coeff: float = Field(25.0, ge=0)
        std_coeff: float = Field(25.0, ge=0)
        cov_coeff: float = Field(1.0, ge=0)
        eps: float = Field(1e-4, gt=0)
        hidden_dim: int = Field(2048, ge=1)
        projection_dim: int = Field(2048, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        # the paper's expander: three linear layers, BN + ReLU after the first two
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=3)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.params
        views = self.two_views(images)
        z1, z2 = self.projector(self.encoder(views)).chunk(2)
        loss, terms = vicreg_loss(z1, z2, p.sim_coeff, p.std_coeff, p.cov_coeff, p.eps)
        return {"loss": loss, **terms}
