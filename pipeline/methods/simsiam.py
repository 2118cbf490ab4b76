"""SimSiam (Chen & He, 2021): a Siamese network with a predictor and a stop-gradient.

No negatives, no momentum encoder: one encoder + projector embeds both views, a bottleneck
predictor maps one view's projection to the other's, and the stop-gradient on the target
projection is what prevents collapse (the paper's Sec. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The paper's D(p, z) = -cos(p, stopgrad(z)), mean over the batch.

    p: ``[N, D]`` predictions; z: ``[N, D]`` projections of the other view (detached here).
    """
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Symmetric loss L = D(p1, z2)/2 + D(p2, z1)/2; all inputs ``[N, D]``; range [-1, 1]."""
    return negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2


@METHODS.register
class SimSiam(Method):
    name = "simsiam"

    class Params(Strict):
        # The paper's projector is 3 layers of 2048 (output BN, no ReLU) and its predictor a
        # 2048 -> 512 -> 2048 bottleneck on ResNet-50's 2048 features. Here the width is 2x the
        # small ResNet's 256 features and the bottleneck keeps the paper's 1/4 ratio.
        dim: int = Field(512, ge=1)
        predictor_hidden_dim: int = Field(128, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.dim, params.dim, layers=3, last_bn=True)
        self.predictor = mlp(params.dim, params.predictor_hidden_dim, params.dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.two_views(images)
        z = self.projector(self.encoder(views))
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        # std of the normalised projections per dimension: ~1/sqrt(dim) when healthy, 0 when
        # collapsed (the paper's Fig. 2 diagnostic), worth seeing in the training log
        z_std = F.normalize(z1.detach(), dim=1).std(dim=0).mean()
        return {"loss": simsiam_loss(p1, p2, z1, z2), "z_std": z_std}
