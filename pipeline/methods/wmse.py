"""W-MSE (Ermolov, Siarohin, Sangineto & Sebe, 2021, "Whitening for Self-Supervised
Representation Learning").

The embeddings of each view are whitened (zero mean, identity covariance) within random
sub-batches, then the two views' whitened embeddings are pulled together by the MSE of
their unit vectors. Whitening scatters the batch over the sphere by construction, so the
MSE cannot collapse it: no negatives, no asymmetric branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def whiten(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Cholesky whitening of every group (the paper's Eq. 4-5): ``x [G, W, D]`` -> ``[G, W, D]``.

    ``xc = x - mean``, ``Sigma = xc^T xc / (W - 1)`` shrunk to ``(1 - eps) Sigma + eps I``,
    ``L L^T = Sigma`` and the output ``xc L^{-T}`` (rows ``L^{-1} xc_i``), whose covariance is I.
    In float32 at least, outside autocast; ``cholesky_ex`` does not read its status back to the
    host (``cholesky`` would, to raise on a singular matrix: a sync per step).
    """
    with torch.autocast(x.device.type, enabled=False):
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        xc = x - x.mean(dim=1, keepdim=True)
        eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
        cov = (1 - eps) * xc.transpose(1, 2) @ xc / (x.shape[1] - 1) + eps * eye
        lower = torch.linalg.cholesky_ex(cov).L  # [G, D, D]
        # rows L^{-1} xc_i: solve L Y = xc^T for Y [G, D, W]
        return torch.linalg.solve_triangular(lower, xc.transpose(1, 2), upper=False).transpose(1, 2)


def wmse_loss(z1: torch.Tensor, z2: torch.Tensor, groups: torch.Tensor, eps: float) -> torch.Tensor:
    """W-MSE for two views (the paper's Eq. 6, its code's ``2 - 2 cos``).

    z1, z2: ``[N, D]`` projections of two views of N images; groups: ``[G, W]`` image indices
    (a random partition of the batch, or of a part of it, into G sub-batches of W). Each view
    is whitened per group; returns the mean over the ``G W`` images of
    ``|| w1/|w1| - w2/|w2| ||^2 = 2 - 2 cos(w1, w2)``.
    """
    w1, w2 = whiten(z1[groups], eps), whiten(z2[groups], eps)  # [G, W, D]
    return (2 - 2 * F.cosine_similarity(w1, w2, dim=-1)).mean()


@METHODS.register
class WMSE(Method):
    name = "wmse"

    class Params(Strict):
        # paper (CIFAR, and solo-learn's recipe): sub-batches of 128 whitened, 64-d embeddings,
        # projector 1024 hidden, one whitening iteration per step
        whitening_size: int = Field(128, ge=2)
        whitening_iters: int = Field(1, ge=1)
        projection_dim: int = Field(64, ge=1)
        hidden_dim: int = Field(1024, ge=1)
        # paper's code: w_eps 0; a small shrinkage keeps a sub-batch of W <= D images (a last
        # partial batch, a test's) finite, and changes nothing measurable when W >> D
        eps: float = Field(1e-4, ge=0, lt=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        n, p = images.shape[0], self.params
        z1, z2 = self.projector(self.encoder(self.two_views(images))).chunk(2)
        # as many sub-batches of whitening_size as fit (at least one, of the whole batch); the
        # paper drops the remainder too. Permutations from the views' seeded generator: resumable.
        g = max(1, n // p.whitening_size)
        w = min(n, p.whitening_size)
        loss = 0
        for _ in range(p.whitening_iters):
            perm = torch.randperm(n, generator=self.views.gen, device=images.device)[: g * w].view(g, w)
            loss = loss + wmse_loss(z1, z2, perm, p.eps)
        return {"loss": loss / p.whitening_iters}
