"""TiCo (Zhu, Balestriero & LeCun, 2022, "TiCo: Transformation Invariance and Covariance
Contrast for Self-Supervised Visual Representation Learning").

Invariance: the two views' unit embeddings agree. Covariance contrast: a running estimate C
of the embeddings' second moment (an EMA over batches, a memory like MoCo's queue) is used as
a quadratic penalty ``z^T C z``, which pushes each embedding away from the directions that
past embeddings crowd into (so they spread, no collapse).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.modalities.image.views import to_float
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def tico_loss(z1: torch.Tensor, z2: torch.Tensor, c: torch.Tensor, beta: float, rho: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's Algorithm 1.

    z1, z2: ``[N, D]`` this rank's projections of two views (L2-normalised here); c: ``[D, D]``
    the running matrix of the previous step (no gradient). ``B = z1_all^T z1_all / M`` over the
    global batch of M = N * world (gathered with gradient), ``C = beta c + (1 - beta) B``, and
    ``loss = -mean_i <z1_i, z2_i> + rho * mean_i z1_i^T C z1_i`` over this rank's rows.
    Returns ``(loss, C detached)``: the caller keeps C for the next step.
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    z1_all = dist.gather_with_grad(z1)
    b = z1_all.T @ z1_all / z1_all.shape[0]
    c_new = beta * c.detach() + (1 - beta) * b
    loss = -(z1 * z2).sum(dim=1).mean() + rho * ((z1 @ c_new) * z1).sum(dim=1).mean()
    return loss, c_new.detach()


@METHODS.register
class TiCo(Method):
    name = "tico"

    class Params(Strict):
        beta: float = Field(0.9, ge=0, lt=1)  # paper / lightly: EMA coefficient of C
        rho: float = Field(20.0, ge=0)  # paper / lightly: weight of the covariance contrast
        # lightly's benchmark head: 3 layers, 4096 hidden -> 256; hidden 2x the small ResNet's 256 here
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(256, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=3)
        # a buffer: checkpoints carry it; every rank computes it from the gathered batch, so
        # DDP's broadcast of rank 0's buffers changes nothing
        self.register_buffer("cov", torch.zeros(params.projection_dim, params.projection_dim))

    @torch.no_grad()
    def prepare(self, sample: torch.Tensor) -> None:
        """Start C at the initial network's second moment on ``sample`` (uint8 ``[S, C, H, W]``).

        The paper starts C at zero; with beta 0.9 the covariance term then grows for ~20 steps
        while C fills, and the loss climbs with it (the transient DINO's centre has from zero)."""
        was_training = self.training
        self.eval()  # BatchNorm running statistics stay those of the initial network
        z = torch.cat([F.normalize(self.projector(self.encoder(to_float(c))), dim=1) for c in sample.split(256)])
        self.train(was_training)
        z = dist.gather_with_grad(z)  # every rank starts from the same C
        self.cov.copy_(z.T @ z / z.shape[0])

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z1, z2 = self.projector(self.encoder(self.two_views(images))).chunk(2)
        loss, c = tico_loss(z1, z2, self.cov, self.params.beta, self.params.rho)
        self.cov.copy_(c)
        return {"loss": loss}
