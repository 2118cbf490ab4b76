"""MoCo v2 (Chen, Fan, Girshick & He, 2020; MoCo: He et al., 2020).

A query encoder (encoder + MLP projector) is trained by InfoNCE to pick its positive key
out of a queue of K negative keys. Keys come from a momentum copy of the query encoder that
the optimizer never sees; it follows the query encoder by EMA after each optimizer step.

Choices (the paper's MoCo v2 is asymmetric, one view as query and one as key):
- symmetric loss, as in MoCo v3 and the MoCo authors' CIFAR-10 demo: each view is a query
  for the other view's key, and both views' keys are enqueued (2N keys per step and rank);
- Shuffling BN (MoCo, Sec. 3.3) emulated on one device: BatchNorm statistics come from
  groups of ``bn_group_size`` images (one GPU each in the paper: 32 images), and the keys'
  groups are a random permutation of the queries', so a query and its positive key do not
  share the batch statistics that would tell the positive apart from the queue's keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._ema import MomentumMethod, cosine_tau
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's contrastive loss, the positive at logit index 0.

    q: ``[N, D]`` queries; k: ``[N, D]`` their positive keys (no gradient); queue: ``[K, D]``
    negative keys, rows of unit norm. q and k are L2-normalised here. Logits are
    ``[N, 1 + K]`` = ``[q.k, q.queue^T] / temperature``; returns the mean cross-entropy
    against class 0 over the N queries.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k.detach(), dim=1)
    pos = (q * k).sum(dim=1, keepdim=True)  # [N, 1]
    neg = q @ queue.detach().T  # [N, K]
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


@METHODS.register
class MoCo(MomentumMethod):
    name = "moco"
    ema_targets = {"key_encoder": "encoder", "key_projector": "projector"}

    class Params(Strict):
        # MoCo v2 (facebookresearch/moco README: --moco-t 0.2 with --mlp); 0.07 is MoCo v1's
        temperature: float = Field(0.2, gt=0)
        # the paper's 65536 exceeds a small pretrain set (20k images here): the queue would hold
        # several stale keys of every image as false negatives. 4096 is the MoCo authors'
        # CIFAR-10 demo value (50k images).
        queue_size: int = Field(4096, ge=1)
        # paper 0.999 over ~500k ImageNet steps; 0.99 (CIFAR-10 demo, MoCo v3's start value)
        # suits runs of a few thousand steps
        momentum: float = Field(0.99, ge=0, lt=1)
        # MoCo v2 keeps m fixed; true: cosine schedule of m toward 1 over training (MoCo v3, BYOL)
        momentum_cosine: bool = False
        # 2-layer MLP head; the paper's hidden 2048 equals ResNet-50's feature size, here
        # 2x the small ResNet's 256 features; output 128 as in the paper
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(128, ge=1)
        # Shuffling BN: images per BatchNorm group, the paper's per-GPU batch (256 on 8 GPUs);
        # the batch size or more turns it off (one group)
        bn_group_size: int = Field(32, ge=2)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=2)
        self.make_targets()
        # random unit keys to start with, as in the paper; buffers so checkpoints carry them
        self.register_buffer("queue", F.normalize(torch.randn(params.queue_size, params.projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # Every rank enqueues every rank's keys, so the queues agree without DDP broadcasting
        # them from rank 0 before each forward (32 MB a step at the paper's 65536 x 128):
        # DDP skips these buffers; they stay buffers, so checkpoints carry them.
        nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, ["queue", "queue_ptr"])

    @torch.no_grad()
    def prepare(self, sample: torch.Tensor) -> None:
        """Fill the queue with keys of one view of each image of ``sample`` (uint8 ``[S, C, H, W]``).

        The paper starts from random unit vectors: trivially easy negatives that real keys
        replace over the first K / 2N steps, during which the loss rises for no fault of
        the model. Keys of the initial key encoder are what a warm queue would hold. A
        sample of fewer than K images is cycled to fill the queue.
        """
        size = self.queue.shape[0]
        keys = []
        for chunk in sample[:size].split(256):
            perm = torch.randperm(chunk.shape[0], generator=self.views.gen, device=chunk.device)
            keys.append(F.normalize(self._grouped(self.key_encoder, self.key_projector, self.views(chunk, view=1), perm), dim=1))
        keys = torch.cat(keys)
        self.queue.copy_(keys.repeat(-(-size // keys.shape[0]), 1)[:size])
        self.queue_ptr.zero_()
        if dist.world_size() > 1:  # each rank drew its own views: start every rank from rank 0's queue
            torch.distributed.broadcast(self.queue, src=0)

    def _grouped(self, encoder: nn.Module, projector: nn.Module, x: torch.Tensor, perm: torch.Tensor | None = None) -> torch.Tensor:
        """projector(encoder(x)) with BatchNorm statistics per group of images (one 'GPU' each).

        perm: a permutation of the batch that decides which images share a group (the keys'
        shuffle); the output is returned in the original order.
        """
        groups = max(1, x.shape[0] // self.params.bn_group_size)  # every group >= bn_group_size images
        xs = x if perm is None else x[perm]
        out = torch.cat([projector(encoder(c)) for c in torch.tensor_split(xs, groups)])
        return out if perm is None else out[torch.argsort(perm)]

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        v1, v2 = self.views(images, view=0), self.views(images, view=1)
        q1 = self._grouped(self.encoder, self.projector, v1)
        q2 = self._grouped(self.encoder, self.projector, v2)
        with torch.no_grad():
            perm = torch.randperm(images.shape[0], generator=self.views.gen, device=images.device)
            k1 = F.normalize(self._grouped(self.key_encoder, self.key_projector, v1, perm), dim=1)
            k2 = F.normalize(self._grouped(self.key_encoder, self.key_projector, v2, perm), dim=1)
        # _enqueue below overwrites the buffer in place; the loss's backward needs the old rows
        queue = self.queue.clone()
        loss = (info_nce(q1, k2, queue, self.params.temperature) + info_nce(q2, k1, queue, self.params.temperature)) / 2
        self._enqueue(dist.gather_with_grad(torch.cat([k1, k2])))
        return {"loss": loss}

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys [M, D]`` (every rank's, rank-major) over the oldest queue rows.

        M need not divide K: writing wraps around the end of the queue. When M > K only the
        newest K keys are kept.
        """
        size, m = self.queue.shape[0], keys.shape[0]
        skip = max(0, m - size)  # keys that would be overwritten within this same write
        # rows from the pointer on the device (reading it on the host would sync every step)
        rows = (self.queue_ptr + skip + torch.arange(m - skip, device=keys.device)) % size
        self.queue.index_copy_(0, rows, keys[skip:].to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + m) % size)

    def momentum(self, progress: float) -> float:
        p = self.params
        return cosine_tau(p.momentum, 1.0, progress) if p.momentum_cosine else p.momentum
