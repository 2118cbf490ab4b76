"""SwAV (Caron et al., 2020): online clustering with swapped prediction and multi-crop.

Every crop is projected onto the unit sphere and scored against K learnable, L2-normalised
prototypes. For each of the 2 large crops, Sinkhorn-Knopp turns the batch's scores into
soft codes that spread the batch evenly over the prototypes (no collapse onto one
cluster); every other crop must then predict those codes from its own scores.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp

N_LARGE = 2  # codes come only from the 2 large crops (the paper's "crops_for_assign")


def _global_logsumexp_over_batch(log_q: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` -> ``[1, K]``: log of each column's sum over the batch of every rank."""
    local = torch.logsumexp(log_q, dim=0, keepdim=True)  # [1, K]
    if dist.world_size() == 1:
        return local
    return torch.logsumexp(dist.gather_with_grad(local), dim=0, keepdim=True)  # [W, K] -> [1, K]


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """Sinkhorn-Knopp codes for one batch (the paper's equipartition constraint).

    scores: ``[B, K]`` prototype scores of this rank's B samples (any float dtype). Q is
    ``exp(scores / epsilon)``, normalised over the global batch of ``B * world`` samples.
    Each of the ``iterations`` (>= 1) makes every prototype's total mass ``1/K`` and then every sample's
    mass ``1/B_global``. Returns ``[B, K]`` float32 (or float64) codes ``B_global * Q``:
    every row sums to exactly 1 (a soft assignment of the sample) and, as the iterations
    converge, every column sums to ``B_global / K`` (``B / K`` on one process).

    The whole computation is in log space: ``scores / epsilon`` reaches 20 for cosine
    scores and epsilon 0.05, so a naive ``exp`` overflows float16 (and float32 for larger
    scores). Computed in at least float32 whatever the input dtype (autocast, half).
    """
    log_q = scores.to(torch.promote_types(scores.dtype, torch.float32)) / epsilon  # [B, K]
    b_global = scores.shape[0] * dist.world_size()
    k = scores.shape[1]
    # (The paper first divides Q by its total; the per-prototype step below makes that moot.)
    for _ in range(iterations):
        log_q = log_q - _global_logsumexp_over_batch(log_q) - math.log(k)  # prototypes: mass 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(b_global)  # samples: 1/B
    return torch.exp(log_q + math.log(b_global))


def swav_loss(scores: torch.Tensor, codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Swapped prediction.

    scores: ``[V, B, K]`` prototype scores (cosines) of V crops of the same B images.
    codes: ``[A, B, K]`` Sinkhorn codes of the first A crops (A = 2 large crops).
    For each coded crop a, every other crop v predicts a's codes with
    ``softmax(scores_v / temperature)``; the cross-entropy is averaged over the B images,
    over the V - 1 predicting crops and over the A coded crops.
    """
    v, a = scores.shape[0], codes.shape[0]
    # float32 and elementwise products: autocast would run an einsum/matmul in bfloat16
    log_p = F.log_softmax(scores.float() / temperature, dim=-1)  # [V, B, K]
    ce = torch.stack([-(codes[i].float() * log_p).sum(-1).mean(-1) for i in range(a)])  # [A, V]
    # the pairs v != a in row order, by slicing (a boolean mask would be a host sync on CUDA)
    not_self = torch.cat([torch.cat([ce[i, :i], ce[i, i + 1:]]) for i in range(a)])
    return not_self.sum() / (a * (v - 1))


@METHODS.register
class SwAV(Method):
    name = "swav"

    class Params(Strict):
        num_prototypes: int = Field(3000, ge=2)
        temperature: float = Field(0.1, gt=0)
        epsilon: float = Field(0.05, gt=0)
        sinkhorn_iterations: int = Field(3, ge=1)
        hidden_dim: int = Field(2048, ge=1)
        projection_dim: int = Field(128, ge=1)
        num_small_crops: int = Field(6, ge=0)
        small_crop_size: int = Field(12, ge=4)
        small_crop_scale: list[float] = Field(default_factory=lambda: [0.05, 0.14], min_length=2, max_length=2)
        freeze_prototypes_iters: int = Field(80, ge=0)
        queue_length: int = Field(0, ge=0)  # per process; 0 = no queue

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.require_crops_fit_encoder(params.num_small_crops, params.small_crop_size, "swav.num_small_crops", "swav.small_crop_size")
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)
        self.prototypes = nn.Linear(params.projection_dim, params.num_prototypes, bias=False)
        # Optimizer steps taken: a buffer, so a resumed run knows whether prototypes are still frozen.
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))
        # Freezing zeroes the prototypes' gradient instead of detaching them: the parameter
        # stays in the graph, which DDP (no find_unused_parameters) requires. With a zero
        # gradient, weight decay and momentum only rescale the prototypes, and the per-step
        # L2 normalisation undoes that, so their directions do not move.
        self.prototypes.weight.register_hook(self._freeze_hook)
        # The queue is a plain tensor, not a buffer: DDP broadcasts buffers from rank 0 each
        # step, which would replace every rank's queue with rank 0's features.
        self.queue: torch.Tensor | None = None  # [2, queue_length, projection_dim]
        self.queue_filled = 0

    def _freeze_hook(self, grad: torch.Tensor) -> torch.Tensor:
        # decided on the device: reading the step count on the host would sync every backward
        if self.params.freeze_prototypes_iters == 0:
            return grad
        return torch.where(self.iteration < self.params.freeze_prototypes_iters, torch.zeros_like(grad), grad)

    def frozen(self) -> bool:
        """(For tests and logs: a host read of the step count.)"""
        return int(self.iteration) < self.params.freeze_prototypes_iters

    def _crops(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Large crops (the augment params' size and scale), then the small crops."""
        p = self.params
        large = torch.cat([self.views(images, view=v) for v in range(N_LARGE)])  # [2B, C, H, W]
        groups = [large]
        if p.num_small_crops:
            groups.append(torch.cat([self.views(images, out_size=p.small_crop_size, scale=tuple(p.small_crop_scale), view=N_LARGE)
                                     for _ in range(p.num_small_crops)]))  # [nB, C, s, s]
        return groups

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        b = images.shape[0]
        with torch.no_grad():  # the paper normalises the prototypes before every step
            w = self.prototypes.weight
            w.copy_(F.normalize(w, dim=1))
        # One encoder forward per resolution; one head forward for all crops.
        feats = torch.cat([self.encoder(g) for g in self._crops(images)])
        z = F.normalize(self.projector(feats), dim=1)  # [V*B, D]
        scores = self.prototypes(z).view(-1, b, self.params.num_prototypes)  # [V, B, K]
        codes = self._codes(scores[:N_LARGE].detach(), z[: N_LARGE * b].detach().view(N_LARGE, b, -1))
        return {"loss": swav_loss(scores, codes, self.params.temperature)}

    @torch.no_grad()
    def _codes(self, scores: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """scores ``[2, B, K]``, z ``[2, B, D]`` of the large crops -> codes ``[2, B, K]``.

        With a full queue, Sinkhorn runs over the queued features' scores (against the
        current prototypes) plus the batch, so small batches still spread over K prototypes.
        """
        length, b = self.params.queue_length, scores.shape[1]
        if self.queue is not None:
            self.queue = self.queue.to(z.device)  # e.g. after a resume, which loads onto the CPU
        use_queue = length > 0 and self.queue is not None and self.queue_filled >= length
        codes = []
        for i in range(N_LARGE):
            s = scores[i].float()
            if use_queue:
                s = torch.cat([(self.queue[i] @ self.prototypes.weight.T).float(), s])
            codes.append(sinkhorn(s, self.params.epsilon, self.params.sinkhorn_iterations)[-b:])
        if length > 0:
            if self.queue is None:
                self.queue = torch.zeros(N_LARGE, length, z.shape[-1], device=z.device, dtype=torch.float32)
            self.queue = torch.cat([z.float(), self.queue], dim=1)[:, :length]  # newest first
            self.queue_filled = min(length, self.queue_filled + b)
        return torch.stack(codes)

    def after_optimizer_step(self, progress: float) -> None:
        self.iteration += 1

    def extra_state(self) -> dict:
        return super().extra_state() | {"queue": self.queue, "queue_filled": self.queue_filled}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.queue, self.queue_filled = state.get("queue"), state.get("queue_filled", 0)
