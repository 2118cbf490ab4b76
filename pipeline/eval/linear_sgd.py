"""The ImageNet-style linear protocol: a linear classifier trained by SGD on the frozen
encoder's features of *augmented* images (random resized crop + flip, fresh every epoch),
tested on un-augmented images (Chen et al. 2020 SimCLR; He et al. 2020 MoCo; He et al. 2022
MAE's linear probing: a parameter-free BatchNorm on the features, then the linear layer).

It complements ``pipeline.eval.linear`` (L-BFGS on fixed features of un-augmented images):
same question, the recipe the ImageNet papers report. Training goes through the shared loop
(``pipeline.train.loop.fit``); only the head is in the optimizer.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import dist
from pipeline.config import OptimParams
from pipeline.data.augment import random_resized_crop, to_float
from pipeline.data.length_groups import length_grouped
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups

CROP_RATIO = (0.75, 1.3333)


def in_memory_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int,
    lengths: torch.Tensor | None = None, window_batches: int = 1,
) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """``batches(epoch)`` for a ``TrainJob`` over in-memory tensors: each epoch a fresh
    permutation drawn from a generator seeded with ``(seed, epoch)``, full batches only.
    images: ``[N, C, H, W]`` (uint8) or packed text ``[N, 2, L]``, labels: ``[N]`` (int64).

    ``lengths`` ``[N]`` (text: real tokens per entry): batches of similar lengths
    (``length_grouped``): the permutation's windows of ``window_batches`` global batches
    sorted by length, the epoch's batches then in a seeded random order.

    Under DDP ``batch_size`` is per process: every rank draws the same permutation and
    takes its slice of each global batch of ``batch_size x world`` images, so the ranks
    together see the one-process run's global batches and all take
    ``N // (batch_size x world)`` steps (``steps_per_epoch``)."""
    labels = labels.long()
    rank, world = dist.rank(), dist.world_size()
    step = batch_size * world

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(len(images), generator=gen)
        full = perm[: len(perm) // step * step]
        if lengths is None:
            full = full.view(-1, step)  # [steps, global batch]
        else:
            full = full[length_grouped(lengths[full], step, window_batches, gen)]
        for idx in full:
            idx = idx[rank * batch_size : (rank + 1) * batch_size]
            yield images[idx], labels[idx]

    return batches


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of an epoch of ``n`` images at ``batch_size`` per process."""
    return n // (batch_size * dist.world_size())


def _topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


class FrozenLinear(nn.Module):
    """Frozen encoder (always eval mode, no grad) + ``BatchNorm1d(affine=False)`` + linear head.

    ``forward(images uint8 [N,C,H,W], labels [N])`` augments on the batch's device (random
    resized crop with area in ``crop_scale`` + horizontal flip, from a generator seeded with
    ``seed``) and returns ``{'loss', 'acc'}``. The BatchNorm has no parameters: in eval mode it
    is a fixed affine map, so the classifier stays linear in the features (as MAE's probe).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, seed: int, crop_scale: tuple[float, float] = (0.08, 1.0)):
        super().__init__()
        self.encoder = encoder
        dim = encoder.feature_dim
        with torch.random.fork_rng(devices=[]):  # the head's init is fixed by the seed, the global RNG untouched
            torch.manual_seed(seed)
            # momentum=None: running statistics are the plain average over every batch; the
            # encoder is frozen, so the feature distribution is stationary and an exponential
            # average would still carry its initial (0, 1) after a short run.
            bn = nn.BatchNorm1d(dim, affine=False, momentum=None)
            self.head = nn.Sequential(bn, nn.Linear(dim, num_classes))
        self.crop_scale = tuple(crop_scale)
        self.seed = seed
        self.gen: torch.Generator | None = None

    def train(self, mode: bool = True) -> "FrozenLinear":
        super().train(mode)
        self.encoder.eval()  # BatchNorm running statistics of the encoder are never updated
        return self

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.gen is None or self.gen.device != images.device:
            self.gen = torch.Generator(device=images.device)
            self.gen.manual_seed(self.seed + dist.rank())  # each rank its own views (rank 0: as one process)
        x = random_resized_crop(to_float(images), self.crop_scale, CROP_RATIO, 0.5, self.gen)
        with torch.no_grad():
            feats = self.encoder(x).float()
        logits = self.head(feats)
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}

    @torch.no_grad()
    def logits(self, images: torch.Tensor, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
        """Logits ``[N, classes]`` of un-augmented uint8 images, in eval mode, on the CPU."""
        self.eval()
        out = [self.head(self.encoder(to_float(images[i : i + batch_size].to(device))).float()).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out)


def linear_sgd(
    encoder: nn.Module, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    epochs: int, batch_size: int, lr: float, seed: int, device: torch.device,
    crop_scale: tuple[float, float] = (0.08, 1.0), amp: bool = True,
) -> dict:
    """Train a linear head on the frozen ``encoder`` and report test accuracy.

    train, test: ``(images uint8 [N, C, H, W], labels int [N])`` on the CPU. SGD with
    momentum 0.9 and no weight decay (the papers' probe), ``lr`` per 256 images (scaled
    linearly with the batch size, as every run of the shared loop), cosine decay to 0 over
    ``epochs`` without warmup. ``batch_size`` is capped at the number of training images; the last partial
    batch of each epoch is dropped. The encoder's weights and buffers are left unchanged
    (its ``requires_grad`` flags and train/eval mode are restored; it ends on ``device``).

    Returns ``top1`` (and ``top5`` with more than 5 classes) on ``test``, the last epoch's
    training loss/accuracy (on augmented images), and the settings used.
    """
    x_tr, y_tr = train[0], torch.as_tensor(np.asarray(train[1])).long()
    x_te, y_te = test[0], torch.as_tensor(np.asarray(test[1])).long()
    if x_tr.dtype != torch.uint8:  # its training views are image crops
        raise ValueError(f"linear_sgd trains on augmented images: uint8 [N, C, H, W], got {x_tr.dtype}")
    if len(x_tr) < 2:
        raise ValueError("linear_sgd needs at least 2 training images")
    n_classes = int(max(int(y_tr.max()), int(y_te.max()))) + 1
    batch_size = min(batch_size, len(x_tr))
    model = FrozenLinear(encoder, n_classes, seed, crop_scale)  # the head is seeded alike on every rank; views per rank
    optim = OptimParams(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr, momentum=0.9, weight_decay=0.0)
    job = TrainJob(
        module=model, param_groups=param_groups(model.head), optim=optim, amp=amp,
        batches=in_memory_batches(x_tr, y_tr, batch_size, seed), steps_per_epoch=steps_per_epoch(len(x_tr), batch_size),
    )
    was_training = encoder.training
    grad_flags = [p.requires_grad for p in encoder.parameters()]
    try:
        for p in encoder.parameters():
            p.requires_grad_(False)
        history = fit(job, device, "linear-sgd")
        logits = model.logits(x_te, device)
    finally:
        for p, flag in zip(encoder.parameters(), grad_flags):
            p.requires_grad_(flag)
        encoder.train(was_training)
    result = {
        "top1": _topk(logits, y_te, 1), "train_loss_last_epoch": history[-1]["loss"],
        "train_acc_last_epoch": history[-1]["acc"], "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "crop_scale": list(crop_scale),
    }
    if n_classes > 5:
        result["top5"] = _topk(logits, y_te, 5)
    return result
