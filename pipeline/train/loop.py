"""The one training loop: device, DDP, autocast, schedule, checkpoint/resume, logging.

It trains any ``nn.Module`` whose ``forward(*batch)`` returns a dict with a ``loss``: an
SSL method (``forward(images)``) or a supervised classifier (``forward(images, labels)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from pipeline import dist
from pipeline.config import OptimParams
from pipeline.errors import UserError
from pipeline.train import checkpoint as ckpt
from pipeline.train.optim import build_optimizer
from pipeline.train.schedule import warmup_cosine


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


CHECK_EVERY = 50  # steps between finiteness checks on the device (one host sync each)


@dataclass
class TrainJob:
    """What to train and how. ``batches(epoch)`` yields tuples of CPU tensors."""

    module: nn.Module
    param_groups: list[dict]
    batches: Callable[[int], Iterable[tuple[torch.Tensor, ...]]]
    steps_per_epoch: int
    optim: OptimParams
    after_optimizer_step: Callable[[float], None] = lambda progress: None
    extra_state: Callable[[], dict] = dict
    load_extra_state: Callable[[dict], None] = lambda state: None
    on_epoch_end: Callable[[int, dict], dict] = lambda epoch, stats: {}
    checkpoint_path: Path | None = None
    checkpoint_every: int = 1
    fingerprint: str = ""
    amp: bool = True
    batch_size_key: str = "batch_size"  # the params key to name when no full batch fits
    lr_key: str = "lr"  # the params key to name when training diverges
    history: list[dict] = field(default_factory=list)


class Diverged(UserError):
    """Training produced a non-finite loss or state (no checkpoint of it is written)."""


def _overflowing(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of float tensors with a non-finite entry, or so large that their squares
    overflow float32 (|w| above ~1e19): such weights turn BatchNorm variances and every norm
    into inf a few steps later. One host sync for all of them."""
    named = [(n, t) for n, t in named if t is not None and t.is_floating_point() and t.numel()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(t.detach().float().square().sum()) for _, t in named]).cpu()
    return [n for (n, _), good in zip(named, ok.tolist()) if not good]


def check_finite(module: nn.Module, where: str, lr_key: str) -> None:
    """Raise ``Diverged`` naming the first bad tensors when any parameter, gradient or
    buffer (BatchNorm running statistics) of ``module`` is non-finite or overflowing."""
    bad = _overflowing(module.named_parameters()) + _overflowing(module.named_buffers())
    bad += [f"{n}.grad" for n in _overflowing((n, p.grad) for n, p in module.named_parameters())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise Diverged(f"{where}: training diverged ({shown} non-finite or overflowing); lower the learning rate "
                       f"({lr_key}) or set a gradient clip (grad_clip)")


def fit(job: TrainJob, device: torch.device, desc: str = "train") -> list[dict]:
    """Train for ``job.optim.epochs`` epochs; returns one stats dict per epoch.

    Resumes from ``job.checkpoint_path`` when it holds an unfinished checkpoint of the same
    fingerprint. A checkpoint is written every ``checkpoint_every`` epochs and after the last
    one (marked finished). Losses and statistics accumulate on the device; finiteness of the
    loss is tracked every step without a host sync and checked every ``CHECK_EVERY`` steps,
    with parameters, gradients and buffers, and always before a checkpoint: a diverged state
    is never saved.
    """
    if job.steps_per_epoch < 1:
        raise UserError(f"[{desc}] {job.batch_size_key}={job.optim.batch_size} is larger than the images available "
                        f"per step and process, so an epoch has no full batch; lower {job.batch_size_key}")
    model = job.module.to(device)
    if dist.world_size() > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(job.param_groups, job.optim, dist.world_size())
    total = job.optim.epochs * job.steps_per_epoch
    lr_mult = warmup_cosine(total, round(job.optim.warmup_epochs * job.steps_per_epoch))
    use_amp = job.amp and device.type == "cuda"

    start_epoch, history = 0, []
    state = ckpt.load_resumable(job.checkpoint_path, job.fingerprint)
    if state is not None:
        job.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        job.load_extra_state(state["extra"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        print(f"[{desc}] resumed from {job.checkpoint_path} after epoch {start_epoch}")

    for epoch in range(start_epoch, job.optim.epochs):
        model.train()
        t0, sums, n = time.time(), {}, 0
        first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
        bar = tqdm(job.batches(epoch), total=job.steps_per_epoch, desc=f"[{desc}] epoch {epoch + 1}/{job.optim.epochs}",
                   disable=not dist.is_main(), leave=False, mininterval=5)
        for i, batch in enumerate(bar):
            if i >= job.steps_per_epoch:  # equal step counts on every rank keep DDP in lockstep
                break
            step = epoch * job.steps_per_epoch + i
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * lr_mult[step]
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(*batch)
            loss = out["loss"]
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if job.optim.grad_clip > 0:
                out["grad_norm"] = torch.nn.utils.clip_grad_norm_(job.module.parameters(), job.optim.grad_clip)
            optimizer.step()
            job.after_optimizer_step((step + 1) / total)
            for k, v in out.items():
                v = v.detach().double()  # float64 sums: the epoch means match a host-side sum
                sums[k] = sums[k] + v if k in sums else v
            n += 1
            if (step + 1) % CHECK_EVERY == 0:
                _check(job, first_bad, f"[{desc}] epoch {epoch + 1} step {i + 1}")
        _check(job, first_bad, f"[{desc}] epoch {epoch + 1}")
        stats = {k: float(v) / max(n, 1) for k, v in sums.items()}
        stats.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=time.time() - t0,
                     images_per_s=n * job.optim.batch_size / max(time.time() - t0, 1e-9))
        model.eval()
        stats.update(job.on_epoch_end(epoch, stats))
        history.append(stats)
        if dist.is_main():
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
            print(f"[{desc}] {shown}", flush=True)
        last = epoch + 1 == job.optim.epochs
        if job.checkpoint_path is not None and dist.is_main() and ((epoch + 1) % job.checkpoint_every == 0 or last):
            ckpt.save(job.checkpoint_path, {
                "module": job.module.state_dict(), "optimizer": optimizer.state_dict(), "extra": job.extra_state(),
                "torch_rng": torch.get_rng_state(), "epoch": epoch, "history": history, "fingerprint": job.fingerprint,
                "finished": last,
            })
    return history


def _check(job: TrainJob, first_bad: torch.Tensor, where: str) -> None:
    bad_step = int(first_bad)  # the one host sync of the check
    if bad_step >= 0:
        raise Diverged(f"{where}: the loss became non-finite at step {bad_step + 1}; lower the learning rate ({job.lr_key}) "
                       "or set a gradient clip (grad_clip)")
    check_finite(job.module, where, job.lr_key)
