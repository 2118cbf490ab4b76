"""ImageNet-like simulation: shard, pretrain briefly, then every evaluation protocol, each as its
own stage process, at two dataset sizes; max RSS, wall time and bytes read per stage, and each
evaluation's time and memory projected to ImageNet-1k (1.28M images x 2048-d features).

    python benchmarks/imagenet_sim.py [--sizes 3000,12000] [--classes 100] [--keep DIR]
    python benchmarks/imagenet_sim.py --smoke        # tiny: what tests/eval/test_imagenet_sim.py runs

Data: per size N, an ImageFolder in ImageNet's layout, ``train/<class>/`` (N photos) and
``val/<class>/``, of JPEG photos 300-500 px a side (``benchmarks/shard.py``'s generator: crops of
scikit-learn's sample photos; ``--unique`` distinct files, the rest hard links). Classes are
assigned round-robin, so accuracies are at chance: this measures cost, not quality. The shard
stage reads ``train/`` as a folder of class folders (``data.root``; ImageNet's train/ + val/ layout
is the data path's item 4) and stores 64 px JPEG (``--store``): 1,000 images each (``--held``)
for pretrain, val and test, the rest is the train split every protocol scales with.

Then ``stages/pretrain.py`` (simclr, 1 epoch, a width-16 two-stage ResNet) and
``stages/evaluate.py`` for each protocol on that encoder, in the order knn, linear_eval,
few_shot, label_efficiency, finetune, diagnostics, transfer, sharing one feature cache
(``--feature-cache``): the first frozen-feature stage extracts the splits, the others read the
memmaps. Per stage process: wall seconds, max RSS (``/usr/bin/time``), peak anonymous RSS of
its process tree (sampled every 0.25 s) and bytes read (``/proc/self/io`` at exit: ``rchar``,
every read() including page-cache hits, and ``read_bytes`` from storage; the stage runs in
this script's ``--exec-with-io`` wrapper; on the CPU the stages decode in-process, no workers).

Projection to 1.28M x 2048, per stage: a straight line through the two sizes' measurements
against the train split's size n (``t = a + b n``; ``rss = a + b n``), evaluated at
n = 1.28M x (2048 / d), d this encoder's feature width: the per-image slope is assumed to grow in
proportion to the feature width (true of the kNN search, the probe and the feature cache; for
the encoder's forward pass the ratio of ResNet-50's cost to this encoder's would be the factor).
These are CPU seconds on this machine, not GPU times; they say which stages grow with n and how
fast, and which stay flat (memory ratio near 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN, IMAGENET_DIM = 1_281_167, 2048
PROTOCOLS = ["knn", "linear_eval", "few_shot", "label_efficiency", "finetune", "diagnostics", "transfer"]


def exec_with_io(out: str, argv: list[str]) -> None:
    """Run the script ``argv[0]`` with ``argv`` as its command line, as ``python argv...`` would,
    then write this process's ``/proc/self/io`` counters to ``out`` (also when it exits with an error)."""
    sys.argv = argv
    sys.path.insert(0, str(Path(argv[0]).resolve().parent))
    try:
        runpy.run_path(argv[0], run_name="__main__")
    finally:
        counters = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
        Path(out).write_text(json.dumps({k: int(v) for k, v in counters.items()}))


def measured(script: str, args: list[str], work: Path) -> dict:
    """Run ``stages/<script>`` with ``args``: wall s, max RSS MiB, peak anon MiB, MiB read."""
    from shard import run_sampled  # benchmarks/shard.py: the process-tree memory sampler

    timing, io = work / "time.txt", work / "io.json"
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(timing), sys.executable, __file__, "--exec-with-io", str(io),
           str(REPO / "stages" / script), *args]
    proc, _, stderr, wall, peak = run_sampled(cmd, work, dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode:
        raise SystemExit(f"{script} {' '.join(args)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    counters = json.loads(io.read_text())
    return {"wall_s": wall, "max_rss_mib": int(timing.read_text().split()[-1]) / 1024, "anon_mib": peak[1] / 2**20,
            "read_mib": counters["rchar"] / 2**20, "disk_read_mib": counters["read_bytes"] / 2**20}


def params_for(folder: Path, n: int, args: argparse.Namespace) -> dict:
    """params.yaml with the simulated data and this benchmark's short recipes merged in."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    held = args.held
    raw["data"].update(source="imagefolder", root=str(folder), image_size=args.store, channels=3, store_size=args.store,
                       image_format="jpeg", pretrain_size=held, train_size=None, val_size=held, test_size=None,
                       test_fraction=held / n, shard_size=args.shard_size, workers=2)
    raw["encoder"].update(arch="resnet", layers=[1, 1], width=16, stem_stride=2)
    batch = min(64, held // 2)
    raw["pretrain"].update(epochs=1, batch_size=batch, knn_bank_size=max(10, held // 2), knn_query_size=max(10, held // 2),
                           prepare_images=held, warmup_epochs=0)
    raw["simclr"].update(hidden_dim=128, projection_dim=64)
    raw["knn"].update(ks=[min(20, held // 2), min(200, held)])
    raw["finetune"].update(epochs=1, batch_size=batch)  # label_efficiency.finetune is its YAML alias
    raw["linear_eval"].update(c_grid=[1.0], max_iter=50, sgd_epochs=1, sgd_batch_size=batch)
    raw["label_efficiency"].update(min_steps=10, c_grid=[1.0], max_iter=50)  # fractions: run_size, from the manifest
    per_class = held // args.classes  # test images per class bound the few-shot episodes
    raw["few_shot"].update(ways=[min(5, args.classes), "all"], shots=[1, min(5, per_class - 2)], queries=min(5, per_class - min(5, per_class - 2)),
                           episodes=args.episodes)
    raw["diagnostics"].update(images=min(500, held), tsne=False)
    raw["transfer"].update(datasets=["digits"], c_grid=[1.0], max_iter=50)
    return raw


def run_size(n: int, base: Path, work: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """Generate, shard, pretrain and evaluate at size ``n``: ``({stage: measurements}, manifest)``."""
    from shard import generate  # benchmarks/shard.py: the photo generator

    from pipeline.eval.algorithms.label_fractions import smallest_fraction

    root = base / f"imagenet-sim-{n}"
    if not (root / "done").exists():
        generate(root / "train", n, args.unique, seed=0, classes=args.classes)
        generate(root / "val", max(args.classes, n // 25), args.unique, seed=1, classes=args.classes)  # ImageNet: 50 per class
        (root / "done").touch()
    params = work / f"params-{n}.yaml"
    params.write_text(yaml.safe_dump(params_for(root / "train", n, args)))
    out = work / f"run-{n}"
    shards, models, features = out / "shards", out / "models" / "simclr", out / "features"
    stages = {"shard": measured("shard.py", ["--params", str(params), "--out", str(shards)], work)}
    manifest = json.loads((shards / "manifest.json").read_text())
    raw = yaml.safe_load(params.read_text())  # 10% of the labels, or the least that keeps every class an image
    smallest = min(int(c) for s in ("train", "val") for c in manifest["splits"][s]["per_class"].values())
    raw["label_efficiency"]["fractions"] = [max(0.1, smallest_fraction(smallest))]
    params.write_text(yaml.safe_dump(raw))
    stages["pretrain"] = measured("pretrain.py", ["--params", str(params), "--method", "simclr", "--shards", str(shards),
                                                  "--out", str(models), "--metrics", str(out / "pretrain.json"),
                                                  "--timing", str(out / "timing.json"), "--live", str(out / "live")], work)
    for protocol in args.protocols.split(","):
        stages[protocol] = measured("evaluate.py", [protocol, "--params", str(params), "--encoder", str(models / "encoder.pt"),
                                                    "--shards", str(shards), "--feature-cache", str(features),
                                                    "--metrics", str(out / f"{protocol}.json"),
                                                    "--details", str(out / f"{protocol}.details.json")], work)
        print(f"n={n} {protocol}: " + ", ".join(f"{k} {v:.1f}" for k, v in stages[protocol].items()), file=sys.stderr, flush=True)
    manifest["feature_dim"] = _feature_dim(models / "encoder.pt")
    manifest["feature_cache_mib"] = sum(f.stat().st_size for f in features.glob("*.npy")) / 2**20
    shutil.rmtree(out)  # the shards and features of the larger size can be large; the images are kept (--keep)
    return stages, manifest


def _feature_dim(path: Path) -> int:
    from pipeline.modalities.encoders import load_encoder

    return load_encoder(str(path)).feature_dim


def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="imagenet-sim-") as tmp:
        base, work = (Path(args.keep) if args.keep else Path(tmp)), Path(tmp)
        runs = {n: run_size(n, base, work, args) for n in sizes}
    lo, hi = min(sizes), max(sizes)
    counts = {n: m["splits"]["train"]["count"] for n, (_, m) in runs.items()}
    dim = runs[lo][1]["feature_dim"]
    scale = IMAGENET_TRAIN * IMAGENET_DIM / dim
    print(f"ImageNet-like simulation: {args.classes} classes, photos stored at {args.store} px JPEG, width-16 ResNet "
          f"({dim}-d features); {os.cpu_count()} CPUs; one run per size\n")
    print("train split: " + ", ".join(f"{counts[n]} images (of {n} photos)" for n in sizes) + "; pretrain, val, test: "
          f"{args.held} each; feature cache: " + ", ".join(f"{runs[n][1]['feature_cache_mib']:.1f} MiB" for n in sizes) + "\n")
    print(f"| stage | wall s at {lo} | at {hi} | max RSS MiB at {lo} | at {hi} | ratio | peak anon MiB at {lo} | at {hi} | "
          f"MiB read at {lo} | at {hi} | projected CPU h at 1.28M x {IMAGENET_DIM} | projected max RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    n1, n2 = counts[lo], counts[hi]
    for stage in runs[lo][0]:
        a, b = runs[lo][0][stage], runs[hi][0][stage]
        proj = {}
        for key in ("wall_s", "max_rss_mib"):
            slope = (b[key] - a[key]) / (n2 - n1)
            # the line through both sizes, at 1.28M x 2048 / d; a slope <= 0 is noise (a shared machine), not a trend
            proj[key] = a[key] + slope * (scale - n1) if slope > 0 else float("nan")
        print(f"| {stage} | {a['wall_s']:.1f} | {b['wall_s']:.1f} | {a['max_rss_mib']:.0f} | {b['max_rss_mib']:.0f} | "
              f"{b['max_rss_mib'] / a['max_rss_mib']:.2f} | {a['anon_mib']:.0f} | {b['anon_mib']:.0f} | {a['read_mib']:.0f} | "
              f"{b['read_mib']:.0f} | {proj['wall_s'] / 3600:.1f} | {proj['max_rss_mib'] / 1024:.1f} |")
    print("\nnan: the larger size measured no more than the smaller one (flat, or the machine's load hid the slope).")
    print(f"Projected: the line through the two sizes (train images {n1} and {n2}) at {IMAGENET_TRAIN:,} x "
          f"({IMAGENET_DIM} / {dim}) train images; CPU hours on this machine (shard and pretrain included for reference), "
          "not GPU times.")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--exec-with-io":
        exec_with_io(sys.argv[2], sys.argv[3:])
        sys.exit(0)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="3000,12000", help="photos in train/ per run (two sizes)")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--held", type=int, default=1000, help="pretrain, val and test images each")
    ap.add_argument("--store", type=int, default=64, help="stored image side (data.store_size)")
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--episodes", type=int, default=100, help="few-shot episodes per setting")
    ap.add_argument("--unique", type=int, default=1000, help="distinct photos per folder (the rest: hard links)")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--keep", default=None, help="folder for the generated images (kept, reused)")
    ap.add_argument("--smoke", action="store_true", help="tiny: 4 classes, 60 and 120 photos, 16 held out, 16 px")
    ap.add_argument("--record", default="imagenet_sim", help="results/<this>.md")
    cli = ap.parse_args()
    if cli.smoke:
        cli.sizes, cli.classes, cli.held, cli.store, cli.shard_size, cli.episodes, cli.unique = "60,120", 4, 16, 16, 40, 5, 8
        main(cli)
    else:
        from record import recorded  # benchmarks/record.py: keeps the printed table in results/

        with recorded(cli.record):
            main(cli)
