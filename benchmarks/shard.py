"""The `shard` stage on an ImageNet-like ImageFolder: throughput and peak memory by worker count.

    python benchmarks/shard.py [--sizes 2000,8000] [--workers 1,2] [--repeats 2]
                               [--store-size 160] [--format jpeg] [--keep DIR]

Generates, per size N, an ImageFolder of N JPEG photos in 10 classes, 300-500 px on each
side, from scikit-learn's two bundled photos (``load_sample_images``; no network): random
crops, rescaled, colour-shifted (per-channel gain and offset), saved at quality 90.
``--unique`` of them are distinct images, the rest hard links to them, so generation stays
fast at 80k (a file is read and decoded whatever its content).

Then runs ``python stages/shard.py`` on each folder with ``data.workers`` 1 and 2
(``data.store_size``, ``data.image_format`` as given; pretrain and train are the whole
pool, so each source image is stored about twice), runs interleaved (size, workers) x
repeats, and reports medians of:

- samples/s: samples written (every split, from the manifest) / wall time of the stage
  process, start-up (imports, ~5 s here) included;
- peak memory of the stage process and its workers, sampled every 0.25 s, as the largest
  sum over the processes of their RSS (pages the forked workers share with the parent,
  torch's libraries included, count once per process) and of their anonymous RSS (RSS
  less file-backed pages: what the processes allocated, heap and copy-on-write pages).
  (PSS and USS would split or drop the shared pages, but they move with the other programs
  on the machine that map the same libraries: 460-750 MiB USS for one configuration here);
- max RSS: the largest resident set of any single process of the run (``/usr/bin/time``);
- CPU s: user + system time of the stage and its workers (``/usr/bin/time``): on a machine
  that other jobs keep busy the wall-time speed-up cannot show, but a CPU time that does not
  grow with the worker count says the parallel version does no extra work.

Prints a markdown table and the ratios the issue sets targets for: peak memory of the
largest size over the smallest (flat: within 1.10), samples/s of 2 workers over 1 (>= 1.7;
as the ratio of medians and of the best runs, the least disturbed by other jobs on a shared
machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


def generate(root: Path, n: int, unique: int, seed: int = 0, classes: int = CLASSES) -> None:
    """``n`` JPEGs in ``classes`` class folders; ``min(n, unique)`` distinct images."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(im) for im in load_sample_images().images]  # 2 x 427x640 RGB
    rng = np.random.default_rng(seed)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for i in range(n):
        path = root / f"class{i % classes:02d}" / f"img{i:07d}.jpg"
        if i < unique:
            photo = photos[int(rng.integers(len(photos)))]
            cw, ch = int(rng.integers(160, 428)), int(rng.integers(160, 428))
            x, y = int(rng.integers(0, photo.width - cw + 1)), int(rng.integers(0, photo.height - ch + 1))
            w, h = int(rng.integers(300, 501)), int(rng.integers(300, 501))
            img = photo.crop((x, y, x + cw, y + ch)).resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.6, 1.3, 3) + rng.uniform(-40, 40, 3)
            if rng.random() < 0.1:  # some grayscale photos, as in ImageNet
                arr = arr.mean(-1, keepdims=True).repeat(3, -1)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)
            made.append(path)
        else:
            os.link(made[i % unique], path)


def memory_of_tree(pid: int) -> tuple[int, int]:
    """(sum of RSS, sum of anonymous RSS) over a process and its descendants, in bytes."""
    import psutil

    rss = anon = 0
    try:
        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except psutil.Error:
        return 0, 0
    for p in procs:
        try:
            m = p.memory_info()  # /proc/PID/statm: cheap
        except psutil.Error:
            continue
        rss += m.rss
        anon += m.rss - m.shared  # resident pages not backed by a file: what the processes allocated
    return rss, anon


def run_sampled(cmd: list[str], cwd: Path, env: dict) -> tuple[subprocess.Popen, str, str, float, list[int]]:
    """Run ``cmd``, sampling its process tree's memory every 0.25 s: the finished process, its
    stdout and stderr, the wall seconds and the peaks ``[RSS sum, anonymous RSS sum]`` in bytes."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            peak[:] = [max(a, b) for a, b in zip(peak, memory_of_tree(proc.pid))]
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    return proc, stdout, stderr, wall, peak


def run_stage(folder: Path, out: Path, workers: int, args, work: Path) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(folder), image_size=args.store_size, channels=3,
                       store_size=args.store_size, image_format=args.format, pretrain_size=None, train_size=None,
                       val_size=max(1, len(list(folder.rglob("*.jpg"))) // 20), test_fraction=0.1,
                       shard_size=args.shard_size, workers=workers)
    params = work / f"params-{folder.name}-{workers}.yaml"
    params.write_text(yaml.safe_dump(raw))
    timing = work / "time.txt"
    cmd = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(timing), sys.executable, str(REPO / "stages" / "shard.py"),
           "--params", str(params), "--out", str(out)]
    proc, stdout, stderr, wall, peak = run_sampled(cmd, work, dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode:
        raise SystemExit(f"shard stage failed ({proc.returncode}):\n{stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    samples = sum(s["count"] for s in manifest["splits"].values())
    max_rss_kib, user_s, sys_s = timing.read_text().split()[-3:]
    return {"wall_s": wall, "cpu_s": float(user_s) + float(sys_s), "samples": samples, "samples_per_s": samples / wall,
            "rss_sum_mib": peak[0] / 2**20, "anon_sum_mib": peak[1] / 2**20, "max_rss_mib": int(max_rss_kib) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000,8000", help="images per generated folder (the issue: 20000,80000)")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--store-size", type=int, default=160)
    ap.add_argument("--format", default="jpeg", choices=["jpeg", "png"])
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--unique", type=int, default=1000, help="distinct images per folder (the rest: hard links)")
    ap.add_argument("--keep", default=None, help="folder for the generated images (kept, reused); default: a temporary one")
    ap.add_argument("--json", default=None, help="also write the raw runs here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory(prefix="shard-bench-") as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        work = Path(tmp)
        folders = {}
        for n in sizes:
            folder = base / f"imagenet-like-{n}"
            if not (folder / "done").exists():
                t = time.perf_counter()
                generate(folder / "images", n, args.unique)
                (folder / "done").touch()
                print(f"generated {n} images in {time.perf_counter() - t:.1f} s", file=sys.stderr)
            folders[n] = folder / "images"
        runs: dict[tuple[int, int], list[dict]] = {(n, w): [] for n in sizes for w in workers}
        for r in range(args.repeats):  # interleaved: a slow phase of the shared machine hits every cell
            for n in sizes:
                for w in workers:
                    res = run_stage(folders[n], work / "shards", w, args, work)
                    runs[(n, w)].append(res)
                    print(f"repeat {r} n={n} workers={w}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()),
                          file=sys.stderr, flush=True)

    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nshard stage, ImageFolder of JPEGs 300-500 px -> store_size {args.store_size} {args.format}, "
          f"{os.cpu_count()} CPUs (load average {load:.1f} at the end), median of {args.repeats}\n")
    print("| images | workers | samples written | wall s | CPU s | samples/s | peak RSS sum MiB | peak anon RSS sum MiB "
          "| max RSS MiB (one process) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (n, w), m in med.items():
        print(f"| {n} | {w} | {m['samples']:.0f} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['samples_per_s']:.0f} | "
              f"{m['rss_sum_mib']:.0f} | {m['anon_sum_mib']:.0f} | {m['max_rss_mib']:.0f} |")
    print()
    lo, hi = min(sizes), max(sizes)
    for w in workers:
        ratios = {m: med[(hi, w)][f"{m}_mib"] / med[(lo, w)][f"{m}_mib"] for m in ("rss_sum", "anon_sum", "max_rss")}
        print(f"- workers={w}: peak memory at {hi} / at {lo} images: "
              + ", ".join(f"{m.replace('_', ' ')} {r:.3f}" for m, r in ratios.items()) + " (target <= 1.10)")
    if 1 in workers:
        for w in workers:
            if w != 1:
                for n in sizes:
                    ratio = med[(n, w)]["samples_per_s"] / med[(n, 1)]["samples_per_s"]
                    best = max(x["samples_per_s"] for x in runs[(n, w)]) / max(x["samples_per_s"] for x in runs[(n, 1)])
                    print(f"- {n} images: samples/s with {w} workers / 1 worker: median {ratio:.2f}, "
                          f"best run / best run {best:.2f} (target >= 1.7)")
    if args.json:
        Path(args.json).write_text(json.dumps({f"{n}x{w}": v for (n, w), v in runs.items()}, indent=2) + "\n")


if __name__ == "__main__":
    with recorded("shard"):
        main()
