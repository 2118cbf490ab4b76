"""Pretraining throughput of the pipeline itself on a GPU host: photos -> JPEG shards -> the
pipeline's loader, views, methods and training loop, end to end.

    python benchmarks/gpu.py                      # one GPU (or the CPU where none is: slow, not a GPU number)
    python benchmarks/gpu.py --nproc all          # every GPU present, under torchrun (DDP, NCCL)
    python benchmarks/gpu.py --smoke --work DIR --json F   # tiny sizes on any device; what tests/test_benchmarks_gpu.py runs

What runs, all of it the pipeline's own code:

1. data: an ImageFolder in ImageNet's layout (``train/<class>/``, ``val/<class>/``) of JPEG
   photos 300-500 px a side (``benchmarks/shard.py``'s generator: crops of scikit-learn's two
   sample photos; ``--unique`` distinct files, the rest hard links), sharded by the shard
   stage's own command line (``stages/shard.py``, run in this process) as JPEG stored by the
   short side (``data.store_aspect``) at ``data.store_size`` (256), in ``data.streams`` virtual
   streams. Made once by the launching process (before torchrun starts any rank), kept in
   ``--work`` and reused by later runs.
2. params: ``params.yaml`` with ``presets/imagenet.yaml`` merged over it (the published
   recipes: LARS for SimCLR, AdamW + 2x224 and 10x96 px crops for DINO, blur [1.0, 0.1] and
   solarize [0.0, 0.2] per view), data pointed at the generated folder, 224 px crops.
3. per (method, arch) of ``--methods`` x ``--archs`` (SimCLR and DINO on torchvision's
   ResNet-50 and timm's ViT-S/16): the method as ``stages/pretrain.py`` builds it, the
   ``EpochLoader`` (persistent workers, pinned memory), ``pipeline.train.loop.fit`` (DDP,
   autocast at ``--precision``, cudnn.benchmark, the optimizer and lr schedule of the recipe).
   Two runs of ``fit`` on the same method and loader:
   - counted: ``--count-steps`` steps inside ``tests/sync_counter.py``'s ``SyncCounter`` (the
     calls that block the host on CUDA); syncs per step are the calls between two optimizer
     steps (the loader's hand-over included), and the epoch's end (finiteness check, stats)
     is reported apart. Counted apart because the counter's Python hook slows every call.
     The counter is a CPU proxy: it counts ``.item()`` on any tensor, so AdamW's per-parameter
     ``step.item()`` (torch keeps those step counters on the CPU unless the optimizer is fused
     or capturable: no GPU sync) shows as one call per parameter tensor in DINO's rows; the
     row's ``sync_calls_last_step`` names the calls.
   - timed: ``--warmup`` steps, then ``--steps`` steps between two ``cuda.synchronize()``:
     images/s = steps x batch x processes / seconds (source images; each gives 2 or 12 views);
     data wait = the seconds the loop spent waiting for the loader's next batch, as a share of
     those seconds; peak memory = ``torch.cuda.max_memory_allocated`` over the timed run.
     Under torchrun the row is rank 0's (its data wait and memory; images/s counts every rank's
     batch: DDP keeps the ranks in step).

Recorded per row (JSON at ``--json``; a markdown table on stdout, kept in
``benchmarks/results/gpu.md`` when not ``--smoke``): method, arch, crop size, batch per process,
processes, device name, precision, torch / CUDA / driver versions, images/s, data-wait share,
peak GPU MiB, syncs per step (median and max) and at the epoch's end, loader workers, the loss
(finite). Published anchor beside it: NVIDIA's ResNet-50 v1.5 training with AMP, about 2,500
images/s on one A100 (DeepLearningExamples), a supervised step (one 224 px view, augmented on the
host by DALI, no views made in the step); SimCLR runs two views per image, about twice that work,
so at the same efficiency its images/s would be about half the anchor's.

``--smoke``: 40 photos stored and cropped at 64 px, batch 4, 2 counted + 2 timed steps, the
pairs SimCLR on ResNet-18 and DINO (2 local 32 px crops, a 256-d head) on ViT-S/16; any device.
On the CPU the rows say device ``cpu`` and peak GPU memory ``null``: the numbers then describe
this machine's CPU, never a GPU.

On a GPU host (nothing here has run there yet): ``python benchmarks/gpu.py`` (about 6,000
photos, 30 timed steps per row; ``--nproc all`` for every GPU); the JSON lands in
``benchmarks/results/gpu.json`` and the table in ``benchmarks/results/gpu.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from collections import Counter
import runpy
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pipeline.errors import exit_on_user_error  # noqa: E402

ANCHOR = "NVIDIA ResNet-50 v1.5 AMP training, supervised: ~2,500 img/s on 1 A100"


def params_for(root: Path, args: argparse.Namespace) -> dict:
    """params.yaml + presets/imagenet.yaml, with the data pointed at ``root`` and this run's sizes."""
    from pipeline.config import merge

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(raw, yaml.safe_load((REPO / "presets" / "imagenet.yaml").read_text()))
    held = max(8, args.images // 10)
    raw["data"].update(root=str(root), image_size=args.size, store_size=args.store, store_aspect=True, pretrain_size=None, train_size=None,
                       val_size=held, test_size=None, shard_size=args.shard_size, streams=args.streams, workers=None)
    if args.smoke:  # small enough for a 2-core CPU in seconds; the same code paths
        raw["dino"].update(out_dim=256, num_local_crops=2, local_crop_size=32)
        raw["simclr"].update(hidden_dim=128)
    for method in args.methods:
        raw[method]["pretrain"] = dict(raw[method].get("pretrain") or {}, epochs=1, warmup_epochs=1)
        if args.batch:
            raw[method]["pretrain"]["batch_size"] = args.batch
    return raw


def prepare(args: argparse.Namespace) -> Path:
    """Generate the ImageFolder and shard it with the shard stage (once per ``--work``); the shard folder."""
    from shard import generate  # benchmarks/shard.py: the photo generator

    work = Path(args.work)
    root, shards = work / "photos", work / "shards"
    if not (root / "done").exists():
        generate(root / "train", args.images, args.unique, seed=0, classes=args.classes)
        generate(root / "val", max(args.classes, args.images // 10), args.unique, seed=1, classes=args.classes)
        (root / "done").touch()
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(params_for(root, args)))  # train/ + val/: the ImageFolder layout
    if not (shards / "manifest.json").exists():
        # the stage's own command line, run in this process (no second interpreter to start)
        argv, sys.argv = sys.argv, [str(REPO / "stages" / "shard.py"), "--params", str(params), "--out", str(shards)]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as err:
            if err.code:
                raise SystemExit(f"the shard stage failed (status {err.code}); its error is above") from None
        finally:
            sys.argv = argv
    return shards


def _waited(batches, waits: list[float], before=lambda i: None):
    """``batches`` with the seconds spent waiting for each appended to ``waits``; ``before(i)``
    is called before batch ``i`` is asked for."""
    it = iter(batches)
    for i in itertools.count():
        before(i)
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        waits.append(time.perf_counter() - t)
        yield batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(method_name: str, arch: str, params_raw: dict, shards: Path, device: torch.device, precision: str,
          args: argparse.Namespace) -> dict:
    """One (method, arch): a counted run and a timed run of ``fit``; the row's numbers."""
    from pipeline import dist
    from pipeline.config import parse_params
    from pipeline.data.loader import EpochLoader, loader_workers
    from pipeline.shards.manifest import read_manifest
    from pipeline.shards.read import stream_batches
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder
    from pipeline.train.loop import TrainJob, fit
    from pipeline.train.optim import param_groups
    from tests.sync_counter import SyncCounter

    raw = json.loads(json.dumps(params_raw))
    raw[method_name]["encoder"] = {"arch": arch}
    params = parse_params(raw, f"benchmarks/gpu.py ({method_name}, {arch})")
    p = params.pretrain_for(method_name)
    manifest = read_manifest(shards)
    torch.manual_seed(params.seed)
    method = METHODS.get(method_name)(build_encoder(params.encoder_for(method_name), manifest),
                                       params.method_params[method_name], params.augment, params.seed + dist.rank(), device)
    method.to(device)
    n = manifest["splits"]["pretrain"]["count"]
    sample = next(stream_batches(shards, "pretrain", min(n, p.prepare_images), 1, params.seed, rank=0, world_size=1,
                                 ordered=manifest.get("streams", 1) > 1))[0].to(device)
    method.prepare(sample)
    workers = loader_workers(args.workers, device)
    loader = EpochLoader(shards, "pretrain", p.batch_size, p.shuffle_buffer, workers, device)
    epochs = itertools.count()

    def endless(_epoch: int):  # loader epochs back to back: a run may be longer than the folder
        return itertools.chain.from_iterable(loader.epoch(params.seed * 1000 + next(epochs)) for _ in itertools.count())

    def run(steps: int, on_step, waits: list[float], before=lambda i: None) -> list[dict]:
        job = TrainJob(module=method, param_groups=param_groups(method, params=method.optimized_parameters()),
                       optim=p, batches=lambda e: _waited(endless(e), waits, before), steps_per_epoch=steps,
                       after_optimizer_step=lambda progress: (method.after_optimizer_step(progress), on_step()),
                       precision=precision, compile=p.compile, sync_batchnorm=None)
        return fit(job, device, desc=f"gpu {method_name} {arch}")

    # counted run: the calls between consecutive optimizer steps
    with SyncCounter() as syncs:
        marks: list[int] = []
        run(args.count_steps, lambda: marks.append(syncs.count), [])
        at_end = syncs.count - marks[-1]
    per_step = [b - a for a, b in zip(marks, marks[1:])] or marks[:1]
    # which calls, in the last counted step (the first also holds one-time set-up)
    last_step = Counter(syncs.calls[marks[-2]:marks[-1]] if len(marks) > 1 else syncs.calls[:marks[0]])

    # timed run
    waits: list[float] = []
    clock: list[float] = []

    def mark(at_step: int) -> None:  # the run's two synchronising points: after warm-up, after the last timed step
        if len(waits) == at_step and len(clock) < 2:
            _sync(device)
            clock.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    history = run(args.warmup + args.steps, lambda: mark(args.warmup + args.steps), waits,
                  before=lambda i: mark(args.warmup) if i == args.warmup else None)
    seconds = clock[1] - clock[0]
    timed_waits = waits[args.warmup:args.warmup + args.steps]
    return {
        "method": method_name, "arch": arch, "crop_px": params.data.image_size, "store_px": params.data.store_size,
        "batch_per_process": p.batch_size, "processes": dist.world_size(), "loader_workers": workers,
        "optimizer": p.optimizer, "views": _views(method_name, params),
        "images_per_s": round(args.steps * p.batch_size * dist.world_size() / seconds, 2),
        "data_wait_share": round(sum(timed_waits) / seconds, 4), "timed_steps": args.steps, "timed_seconds": round(seconds, 3),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "syncs_per_step_median": statistics.median(per_step), "syncs_per_step_max": max(per_step),
        "sync_calls_last_step": dict(last_step.most_common()), "syncs_at_epoch_end": at_end, "counted_steps": args.count_steps, "loss": history[-1]["loss"],
    }


def _views(method_name: str, params) -> str:
    mp = params.method_params[method_name]
    local = getattr(mp, "num_local_crops", 0)
    return f"2x{params.data.image_size}" + (f" + {local}x{mp.local_crop_size}" if local else "")


def environment(device: torch.device, precision: str) -> dict:
    """Device, precision and versions, as the pretrain stage records them (``device_info``)."""
    from pipeline.provenance import device_info

    return {"torch": torch.__version__, **device_info(device, precision)}


def table(rows: list[dict], env: dict) -> str:
    lines = [", ".join(f"{k}: {v}" for k, v in env.items()), "",
             "| method | arch | views | batch x procs | images/s | data wait | peak GPU MiB | syncs/step (median, max) "
             "| syncs at epoch end | anchor |", "|---|---|---|---|---:|---:|---:|---|---:|---|"]
    for r in rows:
        anchor = ANCHOR if r["arch"] == "resnet50" else "-"
        lines.append(f"| {r['method']} | {r['arch']} | {r['views']} | {r['batch_per_process']} x {r['processes']} "
                     f"| {r['images_per_s']:,.1f} | {100 * r['data_wait_share']:.1f}% | {r['peak_gpu_mib']} "
                     f"| {r['syncs_per_step_median']}, {r['syncs_per_step_max']} | {r['syncs_at_epoch_end']} | {anchor} |")
    return "\n".join(lines)


def train(args: argparse.Namespace, shards: Path) -> None:
    from pipeline import dist
    from pipeline.train.device import pick_device, resolve_precision

    dist.init_from_env()
    try:
        device = pick_device(args.device, "--device")
        precision = resolve_precision(args.precision, device, "--precision")
        params_raw = yaml.safe_load((Path(args.work) / "params.yaml").read_text())
        rows = []
        for method_name, arch in args.pairs:
            rows.append(bench(method_name, arch, params_raw, shards, device, precision, args))
            if dist.is_main():
                print(f"[gpu] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
        if dist.is_main():
            env = environment(device, precision)
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"environment": env, "anchor": ANCHOR, "rows": rows}, indent=1) + "\n")
            print(table(rows, env), flush=True)
    finally:
        dist.shutdown()


def _without_option(argv: list[str], option: str) -> list[str]:
    """``argv`` less ``option VALUE`` and ``option=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (40 photos at 64 px, 2 steps, ResNet-18): any device")
    ap.add_argument("--methods", default="simclr,dino")
    ap.add_argument("--archs", default="resnet50,vit_small_patch16_224", help="encoder.arch values; every method on each")
    ap.add_argument("--pairs", default=None, help="method:arch,... instead of methods x archs (smoke: simclr:resnet18,"
                                                   "dino:vit_small_patch16_224)")
    ap.add_argument("--nproc", default="1", help="processes under torchrun: a number, or 'all' (every GPU present)")
    ap.add_argument("--device", default="auto", help="auto | cuda | cpu (pretrain.device's choices)")
    ap.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32 (pretrain.precision's choices)")
    ap.add_argument("--batch", type=int, default=None, help="per-process batch (default: the preset's per method)")
    ap.add_argument("--images", type=int, default=None, help="train photos generated (default 6000; smoke 40)")
    ap.add_argument("--unique", type=int, default=600, help="distinct photos; the rest are hard links")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--size", type=int, default=None, help="crop px (default 224; smoke 64)")
    ap.add_argument("--store", type=int, default=None, help="data.store_size, short side px (default 256; smoke 64)")
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--streams", type=int, default=None, help="data.streams (default 64; smoke 4)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers per process (default: the pipeline's)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 10; smoke 0: the counted run warmed up)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30; smoke 2)")
    ap.add_argument("--count-steps", type=int, default=None, help="steps under the sync counter (default 4; smoke 2)")
    ap.add_argument("--work", default=None, help="folder for the photos and shards (kept; reused when present)")
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gpu.json"))
    args = ap.parse_args(argv)
    small = args.smoke
    for key, full, smoke in [("pairs", None, "simclr:resnet18,dino:vit_small_patch16_224"), ("images", 6000, 40), ("size", 224, 64), ("store", 256, 64), ("shard_size", 500, 10),
                             ("streams", 64, 4), ("warmup", 10, 0), ("steps", 30, 2), ("count_steps", 4, 2),
                             ("work", str(REPO / "data" / "gpu-bench"), None)]:
        if getattr(args, key) is None:
            setattr(args, key, smoke if small else full)
    if args.work is None:
        raise SystemExit("--smoke needs --work (a folder for its photos and shards)")
    if args.pairs:
        args.pairs = [tuple(pair.split(":", 1)) for pair in args.pairs.split(",")]
    else:
        args.pairs = list(itertools.product(args.methods.split(","), args.archs.split(",")))
    args.methods = sorted({m for m, _ in args.pairs})
    if small and args.batch is None:
        args.batch = 4
    from pipeline import dist
    from pipeline.train.device import check_device

    check_device(args.device, "--device")  # --device cuda without a usable GPU: one line, status 2, before the photos
    if not dist.launched_by_torchrun():
        shards = prepare(args)  # once, before any rank starts
        nproc = torch.cuda.device_count() if args.nproc == "all" else int(args.nproc)
        if nproc > 1:
            # the ranks do not need --nproc, and torchrun's own parser would take it for an
            # abbreviation of its --nproc-per-node
            sys.argv = _without_option(sys.argv, "--nproc")
            sys.exit(dist.relaunch_under_torchrun(nproc, __file__, "gpu bench"))
    shards = Path(args.work) / "shards"
    if args.smoke or dist.launched_by_torchrun():
        train(args, shards)
        return
    from record import recorded  # benchmarks/record.py: keeps the printed table in results/gpu.md

    with recorded("gpu"):
        train(args, shards)


if __name__ == "__main__":
    main()
