"""One pretraining run, as the ``pretrain@<method>`` stage runs it: the method on its encoder,
trained by ``loop.fit`` on the pretrain split (resumable, DDP under torchrun), a monitor after
each epoch, DVCLive curves while it runs, then the encoder, its provenance, the headline
metrics and the timing written together (``StagedOutputs``), by rank 0 only.

The checks refuse what cannot work before any work, with one line naming the fix.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline import dist
from pipeline.config import Params, PretrainParams
from pipeline.data.loader import EpochLoader, loader_workers
from pipeline.shards.read import epoch_steps, split_batches, stream_batches
from pipeline.errors import UserError
from pipeline.modalities.base import modality_of
from pipeline.modalities.encoders import build_encoder, save_encoder
from pipeline.outputs import StagedOutputs, write_json
from pipeline.provenance import code_fingerprint, device_info, provenance
from pipeline.train.checkpoint import fingerprint
from pipeline.train.device import pick_device, resolve_precision, why_cpu
from pipeline.train.live import LiveCurves
from pipeline.train.loop import TrainJob, check_finite, fit, use_sync_batchnorm
from pipeline.train.optim import param_groups
from pipeline.train.seed import seed_everything

# samples per streamed batch of the method's held-out measures (MLM's fixed-seed masks are drawn
# batch by batch: another size gives other numbers); the same as eval's features batch, not tied to it
HELD_OUT_BATCH = 1024

# monitor(encoder, epoch) -> numbers logged with the epoch ({} on epochs it skips); built by
# a factory given the device, once the method is prepared
Monitor = Callable[[nn.Module, int], dict]


@dataclass(frozen=True)
class PretrainRun:
    """What one run reads and writes (the stage's arguments)."""

    method: str
    shards: str
    out: Path  # encoder.pt, provenance.json and the resumable checkpoint.pt
    metrics: str  # headline metrics (what `dvc metrics diff` shows)
    timing: str  # wall time and throughput (volatile, kept out of the metrics)
    live: Path  # DVCLive folder for the training curves
    script: str  # the stage script: part of the code fingerprint


def check_modality(method_cls, shards: str, manifest: dict) -> None:
    """A text method on image shards (or the reverse) is refused before any work."""
    data = modality_of(manifest)
    if method_cls.modality != data.name:
        raise UserError(f"method {method_cls.name!r} trains on {method_cls.modality} but {shards} holds {data.name}; run it on "
                        f"{method_cls.modality} shards ({'the text-* stages: --preset text' if data.name == 'image' else 'the image stages'})")


def check_world(p: PretrainParams, run: PretrainRun, manifest: dict, world: int) -> None:
    """Params that cannot work with ``world`` processes, refused before any process starts
    (or on every rank alike, under a torchrun started by hand)."""
    n_images = manifest["splits"]["pretrain"]["count"]
    if n_images < p.batch_size * world:
        raise UserError(f"pretrain.batch_size={p.batch_size} (x {world} processes) exceeds the {n_images} pretrain images "
                        f"in {run.shards}; lower pretrain.batch_size (or a `pretrain: {{batch_size: ...}}` override under "
                        f"'{run.method}:') or raise data.pretrain_size")
    if world > 1:  # the check fit makes, before any process starts
        use_sync_batchnorm(_sync_setting(p), "cuda" if torch.cuda.is_available() else "cpu", "pretrain.sync_batchnorm")


def _sync_setting(p: PretrainParams) -> bool | None:
    """``pretrain.sync_batchnorm`` as ``fit`` takes it (None: auto)."""
    return None if p.sync_batchnorm == "auto" else p.sync_batchnorm


def run_pretraining(run: PretrainRun, params: Params, method_cls, manifest: dict,
                    make_monitor: Callable[[torch.device], Monitor]) -> None:
    """Train ``method_cls`` on ``run.shards`` and write ``run``'s outputs (all of them or none).
    Called on every rank (after ``dist.init_from_env``); rank 0 writes."""
    p = params.pretrain_for(run.method)
    seed_everything(params.seed)
    device = pick_device(p.device)  # this rank's (torchrun: its local GPU)
    precision = resolve_precision(p.precision, device)
    if dist.is_main():
        why = f" (auto: {why_cpu()})" if p.device == "auto" and device.type == "cpu" else ""
        name = f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
        print(f"[pretrain {run.method}] device: {device}{name}{why}; precision: {precision}", flush=True)  # stdout: stderr keeps errors alone
    with StagedOutputs() as staged:  # outputs appear together at the end, or not at all
        _train(run, params, method_cls, manifest, device, precision, staged, make_monitor)


def _train(run: PretrainRun, params: Params, method_cls, manifest: dict, device: torch.device, precision: str,
           staged: StagedOutputs, make_monitor: Callable[[torch.device], Monitor]) -> None:
    out = run.out
    # staged first (only rank 0 writes): an unwritable output path fails now, not after training
    paths = {"encoder": staged.file(out / "encoder.pt"), "provenance": staged.file(out / "provenance.json"),
             "metrics": staged.file(run.metrics), "timing": staged.file(run.timing)} if dist.is_main() else {}

    p = params.pretrain_for(run.method)
    method = method_cls(build_encoder(params.encoder_for(run.method), manifest), params.method_params[run.method], params.augment,
                        params.seed + dist.rank(), device)
    n_images = manifest["splits"]["pretrain"]["count"]
    check_world(p, run, manifest, dist.world_size())
    method.to(device)
    # the same sample on every rank (rank 0's view of the stream): what one process prepares on
    # (virtual streams: the first images in shard order, already a seeded random draw; a stream
    # may hold fewer than prepare_images)
    sample = next(stream_batches(run.shards, "pretrain", min(n_images, p.prepare_images), 1, params.seed,
                                 rank=0, world_size=1, ordered=manifest.get("streams", 1) > 1))[0].to(device)
    method.prepare(sample)
    monitor = make_monitor(device)

    resolved = {"seed": params.seed, "encoder": params.encoder_for(run.method).model_dump(), "augment": params.augment.model_dump(),
                "pretrain": p.model_dump(exclude={"loader_workers"}), run.method: params.method_params[run.method].model_dump()}
    # the code is part of the run: a checkpoint made by other code is never resumed
    run_fingerprint = fingerprint(run.method, resolved, manifest["splits"]["pretrain"]["shards"], code_fingerprint(run.script))
    workers = loader_workers(p.loader_workers, device)
    loader = EpochLoader(run.shards, "pretrain", p.batch_size, p.shuffle_buffer, workers, device)  # workers kept across epochs
    job = TrainJob(
        module=method, param_groups=param_groups(method, params=method.optimized_parameters()), optim=p,
        batches=lambda epoch: loader.epoch(params.seed * 1000 + epoch),
        steps_per_epoch=epoch_steps(run.shards, "pretrain", p.batch_size, dist.world_size()),
        after_optimizer_step=method.after_optimizer_step, extra_state=method.extra_state,
        load_extra_state=method.load_extra_state, on_epoch_end=lambda epoch, stats: monitor(method.encoder, epoch),
        checkpoint_path=out / "checkpoint.pt", checkpoint_every=p.checkpoint_every, checkpoint_every_steps=p.checkpoint_every_steps,
        fingerprint=run_fingerprint, precision=p.precision, precision_key="pretrain.precision", compile=p.compile,
        batch_size_key="pretrain.batch_size", lr_key=f"pretrain.lr, or a `pretrain: {{lr: ...}}` override under '{run.method}:'",
        sync_batchnorm=_sync_setting(p), sync_batchnorm_key="pretrain.sync_batchnorm",
    )
    job.batches_from = lambda epoch, skip: loader.epoch(params.seed * 1000 + epoch, skip)
    curves = LiveCurves(run.live, job.steps_per_epoch)
    job.on_epoch_logged = curves.log
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        history = fit(job, device, desc=f"pretrain {run.method}")
    finally:
        curves.close()
    method.finalize(sample)
    check_finite(method.encoder, f"[pretrain {run.method}] after finalize", "pretrain.lr")
    if not dist.is_main():
        return
    last = history[-1]
    save_encoder(method.encoder, paths["encoder"])
    hardware = device_info(device, precision)
    write_json(paths["provenance"], provenance(resolved, method=run.method, world_size=dist.world_size(), **hardware))
    held_out = method.held_out_metrics(lambda split: split_batches(run.shards, split, HELD_OUT_BATCH))
    write_json(paths["metrics"], {"loss": last["loss"], "knn_top1": last["knn_top1"], "epochs": p.epochs} | held_out)
    wall = time.time() - t0
    images_per_s = sum(h["images_per_s"] for h in history) / len(history)
    write_json(paths["timing"], {"wall_seconds": round(wall, 1), "images_per_second": round(images_per_s, 1)} | hardware)
    # stderr: stdout carries the per-epoch lines; this is the one line to read at the end
    print(f"[pretrain {run.method}] done: {p.epochs} epochs, loss {last['loss']:.4f}, kNN top-1 {100 * last['knn_top1']:.1f}%, "
          f"{wall:.0f} s ({images_per_s * dist.world_size():.0f} images/s, {dist.world_size()} process"
          f"{'es' if dist.world_size() > 1 else ''})", file=sys.stderr, flush=True)
