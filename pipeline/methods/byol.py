"""BYOL (Grill et al., 2020): predict a slow-moving target network's projection of the other view.

The online network (encoder + projector + predictor) is trained; the target network
(encoder + projector) is never optimized and follows the online one by EMA after each
optimizer step, with tau rising from ``base_tau`` to ``final_tau`` on a cosine schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline.config import Strict
from pipeline.methods._ema import MomentumMethod, cosine_tau
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def regression_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised MSE, ``||p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``, mean over the batch.

    p: ``[N, D]`` online predictions; z: ``[N, D]`` target projections of the other view.
    z is detached here: no gradient reaches the target branch whatever the caller passes.
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


@METHODS.register
class BYOL(MomentumMethod):
    name = "byol"
    ema_targets = {"target_encoder": "encoder", "target_projector": "projector"}

    class Params(Strict):
        # BYOL Sec. 3.3: tau_base = 0.996, increased to 1 with a cosine schedule
        base_tau: float = Field(0.996, ge=0, le=1)
        final_tau: float = Field(1.0, ge=0, le=1)
        # The paper's heads are 4096 hidden -> 256 out on ResNet-50's 2048 features; hidden is
        # 2x the small ResNet's 256 features here, output 256 as in the paper
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(256, ge=1)
        predictor_hidden_dim: int = Field(512, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)
        self.predictor = mlp(params.projection_dim, params.predictor_hidden_dim, params.projection_dim, layers=2)
        self.make_targets()

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.two_views(images)
        p1, p2 = self.predictor(self.projector(self.encoder(views))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_encoder(views)).chunk(2)
        # symmetrised over both view orders, summed as in the paper (L + L~)
        return {"loss": regression_loss(p1, z2) + regression_loss(p2, z1)}

    def momentum(self, progress: float) -> float:
        return cosine_tau(self.params.base_tau, self.params.final_tau, progress)
