"""MMCR (Yerxa et al., 2023, "Learning Efficient Coding of Natural Images with Maximum
Manifold Capacity Representations").

Each image's views, projected onto the unit sphere, form a small "manifold" whose centroid
is their mean. The objective maximises the nuclear norm of the batch's centroid matrix
(centroids spread over many directions, and each is long only if its views agree), minus an
optional penalty on each image's own manifold (the paper's lambda).
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


def mmcr_loss(z: torch.Tensor, lmda: float) -> torch.Tensor:
    """``-||C||_* + lmda / M * sum_i ||Z_i||_*``.

    z: ``[N, K, D]`` this rank's projections of K views of N images (L2-normalised here).
    ``Z_i`` is image i's ``[K, D]`` matrix and ``C [M, D]`` the centroids (mean over views) of
    the global batch of M = N * world, gathered with gradient, so the first term is the same on
    every rank. The second term sums over this rank's images and divides by N (its share).
    Singular values by ``torch.linalg.svdvals`` (a host sync on CUDA: its solver checks convergence).
    """
    z = F.normalize(z, dim=-1)
    centroids = dist.gather_with_grad(z.mean(dim=1))  # [M, D]
    loss = -torch.linalg.svdvals(centroids).sum()
    if lmda:
        loss = loss + lmda * torch.linalg.svdvals(z).sum() / z.shape[0]
    return loss


@METHODS.register
class MMCR(Method):
    name = "mmcr"

    class Params(Strict):
        # lightly's default "from the paper for ImageNet"; 0 gives the plain centroid objective
        lmda: float = Field(5e-3, ge=0)
        # views per image: the paper's ImageNet runs use 2 (more help on CIFAR, at the cost of forwards)
        num_views: int = Field(2, ge=2)
        # lightly's benchmark head: 2 layers, 8192 hidden -> 512; hidden 2x the small ResNet's 256 here
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(128, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.params.num_views
        # view index v picks augment's per-view blur/solarize list entry (the last for v >= its length)
        views = torch.cat([self.views(images, view=v) for v in range(k)])  # [K N, C, H, W]
        z = self.projector(self.encoder(views)).view(k, images.shape[0], -1).transpose(0, 1)  # [N, K, D]
        return {"loss": mmcr_loss(z, self.params.lmda)}
