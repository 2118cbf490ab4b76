"""SimCLR (Chen et al., 2020): two views, MLP projector, NT-Xent over 2N-2 negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross-entropy.

    z1, z2: ``[N, D]`` projections of two views of the same N images. Each of the 2N
    embeddings has one positive (its other view) and, across all ranks, 2N*W - 2 negatives;
    similarity is cosine / temperature. Returns the mean loss over the 2N anchors.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2N, D]
    z_all = dist.gather_with_grad(z)  # [2N*W, D], rank-major
    n2 = z.shape[0]
    logits = z @ z_all.T / temperature  # [2N, 2N*W]
    offset = dist.rank() * n2
    local = torch.arange(n2, device=z.device)
    logits[local, offset + local] = float("-inf")  # an embedding is not its own negative
    positives = offset + (local + n2 // 2) % n2
    return F.cross_entropy(logits, positives)


@METHODS.register
class SimCLR(Method):
    name = "simclr"

    class Params(Strict):
        temperature: float = Field(0.2, gt=0)
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(128, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.two_views(images)
        z1, z2 = self.projector(self.encoder(views)).chunk(2)
        return {"loss": nt_xent(z1, z2, self.params.temperature)}
