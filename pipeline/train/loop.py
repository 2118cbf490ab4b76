"""The one training loop: device, DDP, autocast, schedule, checkpoint/resume, logging.

It trains any ``nn.Module`` whose ``forward(*batch)`` returns a dict with a ``loss``: an
SSL method (``forward(images)``) or a supervised classifier (``forward(images, labels)``).
"""

from __future__ import annotations

import itertools
import sys
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
from pipeline.train.device import AUTOCAST_DTYPES, resolve_precision
from pipeline.train.optim import build_optimizer
from pipeline.train.schedule import warmup_cosine


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
    # optimizer steps between checkpoints inside an epoch (0: at epoch ends only); the data
    # position is the step within the epoch, whose batches are a function of the epoch alone
    checkpoint_every_steps: int = 0
    # optional ``(epoch, skip) -> the epoch's batches from batch `skip` on``, for a resume inside
    # an epoch without loading the skipped batches; without it the loop reads and drops them
    batches_from: Callable[[int, int], Iterable[tuple[torch.Tensor, ...]]] | None = None
    fingerprint: str = ""
    amp: bool = True  # False: float32 whatever ``precision`` says (the finetune and probe sections' switch)
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (pipeline.train.device.resolve_precision)
    precision_key: str = "precision"  # the params key to name when the precision is refused
    compile: bool = False  # torch.compile the module's encoder (``module.encoder``, else the module) before training
    batch_size_key: str = "batch_size"  # the params key to name when no full batch fits
    lr_key: str = "lr"  # the params key to name when training diverges
    # SyncBatchNorm under DDP: None (auto) on CUDA only, since torch's SyncBatchNorm runs on
    # GPU modules only (on gloo/CPU, DDP raises "SyncBatchNorm layers only work with GPU
    # modules"); without it each rank normalises its own part of the batch.
    sync_batchnorm: bool | None = None
    sync_batchnorm_key: str = "sync_batchnorm"
    # Called on the main rank after each epoch's stats (and checkpoint) with the history so
    # far (the last entry is the new epoch's; earlier ones may come from a checkpoint): live curves.
    on_epoch_logged: Callable[[list[dict]], None] = lambda history: None
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


def check_finite(module: nn.Module, where: str, lr_key: str, grads: bool = True) -> None:
    """Raise ``Diverged`` naming the first bad tensors when any parameter, gradient or
    buffer (BatchNorm running statistics) of ``module`` is non-finite or overflowing.
    ``grads=False`` skips the gradients (float16 training: the gradient scaler skips steps
    whose scaled gradients overflowed, and lowers its scale; that is not divergence)."""
    bad = _overflowing(module.named_parameters()) + _overflowing(module.named_buffers())
    if grads:
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
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN time and pick its kernels once
    if job.compile:
        # the encoder only, in place (same state_dict keys): the method's own Python (views,
        # queues, losses) stays eager
        getattr(job.module, "encoder", job.module).compile()
    if dist.world_size() > 1:
        if _sync_batchnorm(job, device):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(job.param_groups, job.optim, dist.world_size())
    total = job.optim.epochs * job.steps_per_epoch
    lr_mult = warmup_cosine(total, round(job.optim.warmup_epochs * job.steps_per_epoch))
    precision = resolve_precision(job.precision if job.amp else "fp32", device, job.precision_key)
    # float16 needs loss scaling (its small gradients underflow); bfloat16 and float32 do not
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    start_epoch, history, partial = 0, [], None
    state = _load_checkpoint(job)
    if state is not None:
        job.module.load_state_dict(state["module"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        mine = state["ranks"][dist.rank()]
        _load_rank_state(job, mine, device)
        start_epoch, history = state["epoch"] + 1, state["history"]
        if state.get("steps_in_epoch"):  # written inside epoch start_epoch + 1
            partial = {"steps": state["steps_in_epoch"], "n": mine["n"],
                       "sums": {k: v.to(device) for k, v in mine["sums"].items()}}
        if dist.is_main():
            where = f" and {partial['steps']} steps of epoch {start_epoch + 1}" if partial else ""
            print(f"[{desc}] resumed from {job.checkpoint_path} after epoch {start_epoch}{where}")

    # One bar over the run's steps, on the main rank, to stderr and only when stderr is a
    # terminal (disable=None): under `dvc repro` in a log file or CI, carriage-return
    # redraws would only bloat the log, which gets the per-epoch line printed below instead.
    # It shows no loss: reading one would be a host sync per step.
    done = start_epoch * job.steps_per_epoch + (partial["steps"] if partial else 0)
    bar = tqdm(total=total, initial=done, desc=f"[{desc}]", unit="step", disable=None if dist.is_main() else True,
               leave=False, mininterval=1)
    try:
        return _epochs(job, model, optimizer, scaler, lr_mult, total, AUTOCAST_DTYPES[precision], start_epoch, history, partial,
                       bar, device, desc)
    finally:
        bar.close()


def _epochs(job, model, optimizer, scaler, lr_mult, total, autocast_dtype, start_epoch, history, partial, bar, device,
            desc) -> list[dict]:
    def save(epoch: int, steps_in_epoch: int, sums: dict, n: int, finished: bool) -> None:
        # every rank's RNGs and method state (view generator, SwAV's queue): each rank
        # draws its own views, so a resume restores each rank's own, not rank 0's. Inside
        # an epoch also each rank's running sums, so the epoch's means come out the same.
        mine = _rank_state(job, device)
        if steps_in_epoch:
            mine.update(sums={k: v.cpu() for k, v in sums.items()}, n=n)
        ranks = dist.all_gather_object(mine)
        if dist.is_main():
            ckpt.save(job.checkpoint_path, {
                "module": job.module.state_dict(), "optimizer": optimizer.state_dict(), "ranks": ranks,
                "world_size": dist.world_size(), "epoch": epoch - 1 if steps_in_epoch else epoch,
                "steps_in_epoch": steps_in_epoch, "history": history, "fingerprint": job.fingerprint, "finished": finished,
            } | ({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}))

    for epoch in range(start_epoch, job.optim.epochs):
        model.train()
        t0, sums, n, skip = time.time(), {}, 0, 0
        if partial is not None:  # resumed inside this epoch: its first steps are done
            sums, n, skip, partial = partial["sums"], partial["n"], partial["steps"], None
        n_before = n  # steps of this epoch done before t0 (a resume): not in images/s
        first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first step with a non-finite loss
        bar.set_description(f"[{desc}] epoch {epoch + 1}/{job.optim.epochs}", refresh=False)
        # the epoch's batches depend on the epoch alone (seeded): skipping the first `skip`
        # gives the position the checkpoint was written at
        if not skip:
            epoch_batches = job.batches(epoch)
        elif job.batches_from is not None:
            epoch_batches = job.batches_from(epoch, skip)
        else:
            epoch_batches = itertools.islice(job.batches(epoch), skip, None)
        for i, batch in enumerate(epoch_batches, start=skip):
            if i >= job.steps_per_epoch:  # equal step counts on every rank keep DDP in lockstep
                break
            step = epoch * job.steps_per_epoch + i
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * lr_mult[step]
            batch = tuple(t.to(device, non_blocking=True) for t in batch)
            # the methods make their views inside, in float32 (ViewMaker leaves autocast itself)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                out = model(*batch)
            loss = out["loss"]
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # (without a scaler: loss.backward())
            if job.optim.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients
                out["grad_norm"] = torch.nn.utils.clip_grad_norm_(job.module.parameters(), job.optim.grad_clip)
            # float16: skips the step when the scaled gradients overflowed (one host sync per
            # step, the scaler's own); otherwise optimizer.step()
            scaler.step(optimizer)
            scaler.update()
            job.after_optimizer_step((step + 1) / total)
            for k, v in out.items():
                v = v.detach().double()  # float64 sums: the epoch means match a host-side sum
                sums[k] = sums[k] + v if k in sums else v
            n += 1
            bar.update()
            if (step + 1) % CHECK_EVERY == 0:
                _check(job, first_bad, f"[{desc}] epoch {epoch + 1} step {i + 1}", grads=not scaler.is_enabled())
            every = job.checkpoint_every_steps
            if job.checkpoint_path is not None and every and (step + 1) % every == 0 and i + 1 < job.steps_per_epoch:
                _check(job, first_bad, f"[{desc}] epoch {epoch + 1} step {i + 1}", grads=not scaler.is_enabled())  # never saved
                save(epoch, i + 1, sums, n, finished=False)
        _check(job, first_bad, f"[{desc}] epoch {epoch + 1}", grads=not scaler.is_enabled())
        stats = {k: float(v) / max(n, 1) for k, v in sums.items()}
        stats.update(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], seconds=time.time() - t0,
                     images_per_s=(n - n_before) * job.optim.batch_size / max(time.time() - t0, 1e-9))
        model.eval()
        stats.update(job.on_epoch_end(epoch, stats))
        history.append(stats)
        if dist.is_main():
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in stats.items()}
            (bar.write if not bar.disable else print)(f"[{desc}] {shown}")  # above the bar, not through it
            sys.stdout.flush()
        last = epoch + 1 == job.optim.epochs
        if job.checkpoint_path is not None and ((epoch + 1) % job.checkpoint_every == 0 or last):
            save(epoch, 0, sums, n, finished=last)
        if dist.is_main():
            job.on_epoch_logged(history)
    return history


def _sync_batchnorm(job: TrainJob, device: torch.device) -> bool:
    return use_sync_batchnorm(job.sync_batchnorm, device.type, job.sync_batchnorm_key)


def use_sync_batchnorm(setting: bool | None, device_type: str, key: str) -> bool:
    """Whether DDP converts BatchNorm to SyncBatchNorm: ``None`` (auto) on CUDA only; ``True``
    off CUDA is refused, since torch's SyncBatchNorm runs on GPU modules only."""
    if setting is None:
        return device_type == "cuda"
    if setting and device_type != "cuda":
        raise UserError(f"{key}: true needs CUDA (torch's SyncBatchNorm runs on GPU modules only) and this "
                        f"run is on {device_type}; set {key}: auto (or false)")
    return bool(setting)


def _to_cpu(obj):
    """``obj`` with every tensor moved to the CPU (gathered states are unpickled on rank 0)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _rank_state(job: TrainJob, device: torch.device) -> dict:
    """What differs between ranks and an exact resume needs: the torch RNGs and the job's
    extra state (the views' generator, per-rank queues)."""
    state = {"torch_rng": torch.get_rng_state(), "extra": _to_cpu(job.extra_state())}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _load_rank_state(job: TrainJob, state: dict, device: torch.device) -> None:
    job.load_extra_state(state["extra"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def _load_checkpoint(job: TrainJob) -> dict | None:
    """The resumable checkpoint, read by rank 0 and sent to every rank (on several nodes
    only the first holds the file); a refusal reaches every rank, so none waits for the
    others. A checkpoint of another world size is refused: its ranks' data and RNGs do not
    map onto this run's."""
    result = None
    if dist.is_main():
        try:
            result = ("ok", ckpt.load_resumable(job.checkpoint_path, job.fingerprint))
        except UserError as err:
            result = ("error", str(err))
    kind, value = dist.broadcast_object(result)
    if kind == "error":
        raise UserError(value)
    if value is not None and value.get("world_size", 1) != dist.world_size():
        raise UserError(f"{job.checkpoint_path} was written by a run of {value['world_size']} processes and this run has "
                        f"{dist.world_size()}; resume it with {value['world_size']} processes, or delete it to train from "
                        f"scratch: rm {job.checkpoint_path}")
    return value


def _check(job: TrainJob, first_bad: torch.Tensor, where: str, grads: bool = True) -> None:
    bad_step = int(first_bad)  # the one host sync of the check
    if bad_step >= 0:
        raise Diverged(f"{where}: the loss became non-finite at step {bad_step + 1}; lower the learning rate ({job.lr_key}) "
                       "or set a gradient clip (grad_clip)")
    check_finite(job.module, where, job.lr_key, grads)
