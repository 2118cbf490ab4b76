"""DVC stage `pretrain@<method>`: self-supervised pretraining of the encoder."""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import dist
from pipeline.config import load_params
from pipeline.data.loader import EpochLoader, loader_workers
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import epoch_steps, first_samples, split_batches, stream_batches
from pipeline.errors import UserError, exit_on_user_error, output_lock
from pipeline.eval.features import BATCH, encoder_features
from pipeline.eval.algorithms.knn import knn_accuracy
from pipeline.eval.protocol import seed_everything
from pipeline.registry import METHODS
from pipeline.modalities.encoders import build_encoder, save_encoder
from pipeline.outputs import StagedOutputs, write_json
from pipeline.provenance import code_fingerprint, device_info, provenance
from pipeline.train.checkpoint import fingerprint
from pipeline.train.device import check_device, pick_device, resolve_precision, why_cpu
from pipeline.train.loop import TrainJob, check_finite, fit, use_sync_batchnorm
from pipeline.train.optim import param_groups



@exit_on_user_error(kept="no output was written (a checkpoint.pt in --out, if any, resumes the run)")
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--preset", help="a preset merged over --params, e.g. text (presets/<name>.yaml)")
    ap.add_argument("--method", required=True)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--out", required=True, help="folder for encoder.pt and checkpoint.pt")
    ap.add_argument("--metrics", required=True, help="headline metrics (what `dvc metrics diff` shows)")
    ap.add_argument("--timing", required=True, help="wall time and throughput (volatile, kept out of the metrics)")
    ap.add_argument("--live", required=True, help="DVCLive folder for the training curves")
    args = ap.parse_args()
    params = load_params(args.params, args.preset)
    method_cls = METHODS.get(args.method)
    manifest = read_manifest(args.shards)
    _check_modality(method_cls, args.shards, manifest)
    with output_lock(args.out):  # a second run in the same folder refuses (the ranks of a torchrun share it)
        _run(args, params, method_cls, manifest)


def _run(args, params, method_cls, manifest: dict) -> None:
    p = params.pretrain_for(args.method)
    check_device(p.device)  # device: cuda without a usable GPU stops here, before any work (one line, status 2)
    if p.nproc_per_node > 1 and not dist.launched_by_torchrun():
        _check_world(p, args, manifest, p.nproc_per_node)
        # bad params and data were refused above, in this one process (one line, status 2)
        sys.exit(dist.relaunch_under_torchrun(p.nproc_per_node, __file__, "pretrain"))
    dist.init_from_env()
    seed_everything(params.seed)
    device = pick_device(p.device)  # this rank's (torchrun: its local GPU)
    precision = resolve_precision(p.precision, device)
    if dist.is_main():
        why = f" (auto: {why_cpu()})" if p.device == "auto" and device.type == "cpu" else ""
        name = f" {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
        print(f"[pretrain {args.method}] device: {device}{name}{why}; precision: {precision}", flush=True)  # stdout: stderr keeps errors alone
    out = Path(args.out)
    try:
        with StagedOutputs() as staged:  # outputs appear together at the end, or not at all
            _train(args, params, method_cls, manifest, device, precision, out, staged)
    finally:
        dist.shutdown()


def _check_modality(method_cls, shards: str, manifest: dict) -> None:
    """A text method on image shards (or the reverse) is refused before any work."""
    data = manifest.get("modality", "image")
    if method_cls.modality != data:
        raise UserError(f"method {method_cls.name!r} trains on {method_cls.modality} but {shards} holds {data}; run it on "
                        f"{method_cls.modality} shards ({'the text-* stages: --preset text' if data == 'image' else 'the image stages'})")


def _check_world(p, args, manifest: dict, world: int) -> None:
    """Params that cannot work with ``world`` processes, refused before any process starts
    (or on every rank alike, under a torchrun started by hand)."""
    n_images = manifest["splits"]["pretrain"]["count"]
    if n_images < p.batch_size * world:
        raise UserError(f"pretrain.batch_size={p.batch_size} (x {world} processes) exceeds the {n_images} pretrain images "
                        f"in {args.shards}; lower pretrain.batch_size (or a `pretrain: {{batch_size: ...}}` override under "
                        f"'{args.method}:') or raise data.pretrain_size")
    if world > 1:  # the check fit makes, before any process starts
        use_sync_batchnorm(_sync_setting(p), "cuda" if torch.cuda.is_available() else "cpu", "pretrain.sync_batchnorm")


def _sync_setting(p) -> bool | None:
    """``pretrain.sync_batchnorm`` as ``fit`` takes it (None: auto)."""
    return None if p.sync_batchnorm == "auto" else p.sync_batchnorm


def _train(args, params, method_cls, manifest, device, precision: str, out: Path, staged: StagedOutputs) -> None:
    # staged first (only rank 0 writes): an unwritable output path fails now, not after training
    paths = {"encoder": staged.file(out / "encoder.pt"), "provenance": staged.file(out / "provenance.json"),
             "metrics": staged.file(args.metrics), "timing": staged.file(args.timing)} if dist.is_main() else {}

    p = params.pretrain_for(args.method)
    method = method_cls(build_encoder(params.encoder_for(args.method), manifest), params.method_params[args.method], params.augment,
                        params.seed + dist.rank(), device)
    n_images = manifest["splits"]["pretrain"]["count"]
    _check_world(p, args, manifest, dist.world_size())
    method.to(device)
    # the same sample on every rank (rank 0's view of the stream): what one process prepares on
    # (virtual streams: the first images in shard order, already a seeded random draw; a stream
    # may hold fewer than prepare_images)
    sample = next(stream_batches(args.shards, "pretrain", min(n_images, p.prepare_images), 1, params.seed,
                                 rank=0, world_size=1, ordered=manifest.get("streams", 1) > 1))[0].to(device)
    method.prepare(sample)
    bank_x, bank_y = _first_images(args.shards, "train", p.knn_bank_size)
    query_x, query_y = _first_images(args.shards, "val", p.knn_query_size)

    def monitor(epoch: int, stats: dict) -> dict:
        if (epoch + 1) % p.knn_every and epoch + 1 != p.epochs:
            return {}
        featurize = encoder_features(method.encoder, device)
        k = min(p.knn_k, len(bank_y))  # a bank smaller than k votes over all of it
        return {"knn_top1": knn_accuracy(featurize(bank_x), bank_y, featurize(query_x), query_y, k, params.protocol_params["knn"].temperature)}

    resolved = {"seed": params.seed, "encoder": params.encoder_for(args.method).model_dump(), "augment": params.augment.model_dump(),
                "pretrain": p.model_dump(exclude={"loader_workers"}), args.method: params.method_params[args.method].model_dump()}
    # the code is part of the run: a checkpoint made by other code is never resumed
    run_fingerprint = fingerprint(args.method, resolved, manifest["splits"]["pretrain"]["shards"], code_fingerprint(__file__))
    workers = loader_workers(p.loader_workers, device)
    loader = EpochLoader(args.shards, "pretrain", p.batch_size, p.shuffle_buffer, workers, device)  # workers kept across epochs
    job = TrainJob(
        module=method, param_groups=param_groups(method, params=method.optimized_parameters()), optim=p,
        batches=lambda epoch: loader.epoch(params.seed * 1000 + epoch),
        steps_per_epoch=epoch_steps(args.shards, "pretrain", p.batch_size, dist.world_size()),
        after_optimizer_step=method.after_optimizer_step, extra_state=method.extra_state,
        load_extra_state=method.load_extra_state, on_epoch_end=monitor,
        checkpoint_path=out / "checkpoint.pt", checkpoint_every=p.checkpoint_every, checkpoint_every_steps=p.checkpoint_every_steps,
        fingerprint=run_fingerprint, precision=p.precision, precision_key="pretrain.precision", compile=p.compile,
        batch_size_key="pretrain.batch_size", lr_key=f"pretrain.lr, or a `pretrain: {{lr: ...}}` override under '{args.method}:'",
        sync_batchnorm=_sync_setting(p), sync_batchnorm_key="pretrain.sync_batchnorm",
    )
    job.batches_from = lambda epoch, skip: loader.epoch(params.seed * 1000 + epoch, skip)
    curves = LiveCurves(Path(args.live), job.steps_per_epoch)
    job.on_epoch_logged = curves.log
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        history = fit(job, device, desc=f"pretrain {args.method}")
    finally:
        curves.close()
    method.finalize(sample)
    check_finite(method.encoder, f"[pretrain {args.method}] after finalize", "pretrain.lr")
    if not dist.is_main():
        return
    last = history[-1]
    save_encoder(method.encoder, paths["encoder"])
    hardware = device_info(device, precision)
    write_json(paths["provenance"], provenance(resolved, method=args.method, world_size=dist.world_size(), **hardware))
    held_out = method.held_out_metrics(lambda split: split_batches(args.shards, split, BATCH))
    write_json(paths["metrics"], {"loss": last["loss"], "knn_top1": last["knn_top1"], "epochs": p.epochs} | held_out)
    wall = time.time() - t0
    images_per_s = sum(h["images_per_s"] for h in history) / len(history)
    write_json(paths["timing"], {"wall_seconds": round(wall, 1), "images_per_second": round(images_per_s, 1)} | hardware)
    # stderr: stdout carries the per-epoch lines; this is the one line to read at the end
    print(f"[pretrain {args.method}] done: {p.epochs} epochs, loss {last['loss']:.4f}, kNN top-1 {100 * last['knn_top1']:.1f}%, "
          f"{wall:.0f} s ({images_per_s * dist.world_size():.0f} images/s, {dist.world_size()} process"
          f"{'es' if dist.world_size() > 1 else ''})", file=sys.stderr, flush=True)


def _first_images(shards: str, split: str, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The split's first ``n`` images, and their labels as numpy (the kNN monitor's bank and queries)."""
    x, y = first_samples(shards, split, n)
    return x, y.numpy()


class LiveCurves:
    """DVCLive curves written while training runs, one point per epoch, at the optimizer
    step that ended it (the x axis is the real step; ``epoch`` is a curve of its own).

    The folder is written in place, not staged with the other outputs: it is a ``cache:
    false`` plots folder that nothing downstream reads, and seeing it grow during a run (and
    what a failed or diverged run did before it stopped) is its purpose. The headline
    outputs stay all-or-nothing. A fresh run clears it (DVCLive's default); a resumed run
    continues it with ``resume=True`` after dropping any point past the checkpoint it resumes
    from (epochs logged after the last checkpoint are trained and logged again), so a
    resumed run draws the same curves as an uninterrupted one; when the folder is gone, the
    checkpoint's history draws the earlier points. (dvc.yaml marks the folder ``persist``, so
    ``dvc repro`` does not delete it before restarting a killed run.) Nothing is created
    before the first epoch ends (a run that fails earlier leaves no folder). Main rank only.
    """

    KEYS = ("loss", "lr", "knn_top1")

    def __init__(self, folder: Path, steps_per_epoch: int):
        self.folder, self.steps_per_epoch, self.live = folder, steps_per_epoch, None

    def log(self, history: list[dict]) -> None:
        if self.live is None:
            self.live = self._open(history)
        self._point(history[-1])

    def _point(self, stats: dict) -> None:
        self.live.step = stats["epoch"] * self.steps_per_epoch
        self.live.log_metric("epoch", stats["epoch"])
        for key in self.KEYS:
            if key in stats:
                self.live.log_metric(key, stats[key])
        self.live.next_step()  # writes the point and the summary now

    def _open(self, history: list[dict]):
        from dvclive import Live

        earlier = history[:-1]  # epochs of a checkpoint this run resumed from
        metrics = self.folder / "plots" / "metrics"
        resume = bool(earlier) and (metrics / "loss.tsv").is_file()
        if resume:  # the killed run's curves: keep them up to the checkpoint
            _drop_points_after(metrics, earlier[-1]["epoch"] * self.steps_per_epoch)
        live = Live(dir=str(self.folder), save_dvc_exp=False, dvcyaml=None, report=None, resume=resume)
        if earlier and not resume:  # resumed, but its curves are gone: draw them from the checkpoint's history
            self.live = live
            for stats in earlier:
                self._point(stats)
        return live

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def _drop_points_after(metrics_dir: Path, last_step: int) -> None:
    """Keep only the points at steps <= ``last_step`` in DVCLive's ``.tsv`` files."""
    for path in sorted(metrics_dir.rglob("*.tsv")) if metrics_dir.is_dir() else []:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        kept = rows[:1] + [r for r in rows[1:] if int(float(r[0])) <= last_step]
        with open(path, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)


if __name__ == "__main__":
    main()
