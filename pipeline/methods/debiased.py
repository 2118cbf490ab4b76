"""Debiased contrastive learning (Chuang et al., 2020, "Debiased Contrastive Learning").

In SimCLR's batch some "negatives" share the anchor's class (false negatives). With a class
prior ``tau_plus`` (the chance that a random image is of the anchor's class), the paper's
Eq. 5 estimates the true negatives' term from the batch: it subtracts the expected share of
same-class samples, estimated by the positive, and clips the estimate at its minimum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def debiased_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, tau_plus: float) -> torch.Tensor:
    """The paper's debiased objective (Eq. 5 with M = 1 positive), SimCLR's two-view batch.

    z1, z2: ``[N, D]`` this rank's projections (L2-normalised here); the 2N anchors' negatives
    are the other ``2 N world - 2`` embeddings of every rank. With ``pos = exp(s+/t)`` and
    ``neg_j = exp(s_j/t)``: ``Ng = max((sum_j neg_j - tau_plus * n * pos) / (1 - tau_plus),
    n * exp(-1/t))`` for ``n = 2 N world - 2``, and the loss is the mean over this rank's
    anchors of ``-log(pos / (pos + Ng))``. ``tau_plus = 0`` is SimCLR's NT-Xent.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2N, D]
    z_all = dist.gather_with_grad(z)  # [2N * world, D], rank-major
    n2, m = z.shape[0], z_all.shape[0]
    own = dist.rank() * n2 + torch.arange(n2, device=z.device)
    partner = dist.rank() * n2 + (torch.arange(n2, device=z.device) + n2 // 2) % n2
    cols = torch.arange(m, device=z.device)
    not_negative = (cols == own[:, None]) | (cols == partner[:, None])  # [2N, M]: itself and its positive
    # every similarity is at most 1/t: exponentiate s - 1/t (the ratio below is unchanged) so
    # a small temperature cannot overflow
    e = torch.exp((z @ z_all.T - 1) / temperature)  # [2N, M]
    pos = e.gather(1, partner[:, None]).squeeze(1)  # [2N]
    neg = e.masked_fill(not_negative, 0).sum(dim=1)
    n = m - 2
    ng = ((neg - tau_plus * n * pos) / (1 - tau_plus)).clamp(min=n * math.exp(-2 / temperature))  # n e^{-1/t}, scaled by e^{-1/t}
    return -torch.log(pos / (pos + ng)).mean()


@METHODS.register
class Debiased(Method):
    name = "debiased"

    class Params(Strict):
        temperature: float = Field(0.5, gt=0)  # paper's code (chingyaoc/DCL): 0.5
        tau_plus: float = Field(0.1, ge=0, lt=1)  # paper: 0.1 for CIFAR-10/STL-10 (10 classes); Fashion-MNIST has 10
        hidden_dim: int = Field(512, ge=1)  # SimCLR's head, as the paper; sized as simclr here
        projection_dim: int = Field(128, ge=1)  # paper: 128

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z1, z2 = self.projector(self.encoder(self.two_views(images))).chunk(2)
        return {"loss": debiased_loss(z1, z2, self.params.temperature, self.params.tau_plus)}
