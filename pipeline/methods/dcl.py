"""DCL and DCLW (Yeh et al., 2022, "Decoupled Contrastive Learning").

SimCLR's loss with the positive removed from the denominator (the paper's Eq. 6): the
negative-positive coupling that makes InfoNCE need large batches is gone. DCLW weights the
positive term by the von Mises-Fisher weight ``w_i = 2 - N exp(<z1_i, z2_i> / sigma) /
sum_k exp(<z1_k, z2_k> / sigma)`` (mean 1 over the batch): hard positives count more.
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


def vmf_weights(z1_all: torch.Tensor, z2_all: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[M, D]`` unit embeddings of the global batch -> ``[M]`` weights ``2 - M softmax(<z1, z2> / sigma)``.

    Detached, as in lightly: the weight scales each positive's gradient, it is not itself optimised.
    """
    sim = (z1_all * z2_all).sum(dim=1).detach() / sigma
    return 2 - z1_all.shape[0] * F.softmax(sim, dim=0)


def _one_side(z1: torch.Tensor, z1_all: torch.Tensor, z2_all: torch.Tensor, temperature: float,
              sigma: float | None) -> torch.Tensor:
    """Eq. 6 for the anchors ``z1`` (this rank's ``[N, D]``, rows ``rank*N ..`` of the ``[M, D]`` alls)."""
    n = z1.shape[0]
    own = dist.rank() * n + torch.arange(n, device=z1.device)  # each anchor's column in the alls
    same = own[:, None] == torch.arange(z1_all.shape[0], device=z1.device)  # [N, M]; masks, not boolean indexing (a host sync)
    sim_11 = (z1 @ z1_all.T / temperature).masked_fill(same, float("-inf"))  # not itself
    sim_12 = z1 @ z2_all.T / temperature
    positive = sim_12.gather(1, own[:, None]).squeeze(1)  # [N]
    if sigma is not None:
        positive = positive * vmf_weights(z1_all, z2_all, sigma)[own]
    negatives = torch.logsumexp(torch.cat([sim_11, sim_12.masked_fill(same, float("-inf"))], dim=1), dim=1)
    return (negatives - positive).mean()


def dcl_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float, sigma: float | None = None) -> torch.Tensor:
    """Decoupled contrastive loss, symmetric over the two views (Eq. 6, summed over k = 1, 2).

    z1, z2: ``[N, D]`` this rank's projections of two views (L2-normalised here). For anchor
    ``z1_i``: ``-<z1_i, z2_i>/t * w_i + log sum_{j != i, v in {1,2}} exp(<z1_i, zv_j>/t)``,
    negatives from every rank; ``w_i = 1`` (DCL) or the vMF weight with ``sigma`` (DCLW).
    Returns the mean over this rank's N anchors of both views' losses, halved.
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    z1_all, z2_all = dist.gather_with_grad(z1), dist.gather_with_grad(z2)
    return (_one_side(z1, z1_all, z2_all, temperature, sigma) + _one_side(z2, z2_all, z1_all, temperature, sigma)) / 2


class _Decoupled(Method):
    """DCL's network: SimCLR's (encoder + 2-layer projector); DCLW's params add ``sigma``."""

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z1, z2 = self.projector(self.encoder(self.two_views(images))).chunk(2)
        return {"loss": dcl_loss(z1, z2, self.params.temperature, getattr(self.params, "sigma", None))}


@METHODS.register
class DCL(_Decoupled):
    name = "dcl"

    class Params(Strict):
        temperature: float = Field(0.1, gt=0)  # paper (SimCLR's setting; lightly's default)
        hidden_dim: int = Field(512, ge=1)  # SimCLR's head, as the paper; sized as simclr here
        projection_dim: int = Field(128, ge=1)


@METHODS.register
class DCLW(_Decoupled):
    name = "dclw"

    class Params(Strict):
        temperature: float = Field(0.1, gt=0)  # paper / lightly
        sigma: float = Field(0.5, gt=0)  # paper: vMF weighting with sigma 0.5
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(128, ge=1)
