"""Peak memory of the evaluation stages as the labelled set grows: this tree against an
earlier revision (``--rev``, e.g. one that held whole splits in memory), side by side.

    python benchmarks/eval_memory.py [--sizes 20000,80000] [--rev HEAD~1] [--protocols finetune,...]

Per size N, an ImageNet-like ImageFolder of N JPEG photos (``benchmarks/shard.py``'s
generator: 300-500 px crops of scikit-learn's sample photos), sharded by this tree's
``stages/shard.py`` at ``data.store_size`` 64 px JPEG (1,000 pretrain, 1,000 val, 1,000
test images; the rest is the train split). Then each protocol's evaluate stage on the
random-init baseline (a width-16 ResNet; one epoch of fine-tuning and of the SGD probe;
label efficiency at 1% of the labels), run by each revision's own code on the same shards,
interleaved (size, revision) per protocol. Reported per run: wall time, the stage
process's max RSS (``/usr/bin/time``) and its peak anonymous RSS (sampled every 0.25 s:
what it allocated, not the shared libraries). A stage whose memory is flat in the dataset
size has ratios near 1 between the largest and the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/
from shard import generate, run_sampled  # benchmarks/shard.py: the photos and the process-tree sampler

REPO = Path(__file__).resolve().parents[1]
STORE = 64
HELD_OUT = 1000  # pretrain, val and test images each


def params_for(repo: Path, folder: Path, n: int) -> dict:
    """``repo``'s params.yaml with the data (``n`` photos in ``folder``) and the small recipes of
    this benchmark merged in."""
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(folder), image_size=STORE, channels=3, store_size=STORE,
                       image_format="jpeg", pretrain_size=HELD_OUT, train_size=None, val_size=HELD_OUT, test_size=None,
                       test_fraction=HELD_OUT / n,
                       shard_size=5000, workers=2)
    raw["encoder"].update(arch="resnet", layers=[1, 1], width=16, stem_stride=2)
    raw["finetune"].update(epochs=1, batch_size=128)  # label_efficiency.finetune is its YAML alias
    raw["linear_eval"].update(c_grid=[1.0], max_iter=50, sgd_epochs=1)
    raw["label_efficiency"].update(fractions=[0.01], min_steps=20, c_grid=[1.0], max_iter=50)
    raw["diagnostics"].update(tsne=False)
    return raw


def measured(cmd: list[str], cwd: Path, env: dict, work: Path) -> dict:
    """Run ``cmd``; its wall seconds, max RSS and peak anonymous RSS in MiB."""
    timing = work / "time.txt"
    proc, _, stderr, wall, peak = run_sampled(["/usr/bin/time", "-f", "%M", "-o", str(timing), *cmd], cwd, env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "max_rss_mib": int(timing.read_text().split()[-1]) / 1024, "anon_mib": peak[1] / 2**20}


def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    protocols = args.protocols.split(",")
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    with tempfile.TemporaryDirectory(prefix="eval-memory-") as tmp:
        base, work = (Path(args.keep) if args.keep else Path(tmp)), Path(tmp)
        old = work / f"rev-{rev}"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), rev], cwd=REPO, check=True, capture_output=True)
        try:
            trees = {"this tree": REPO, rev: old}
            shards = {}
            for n in sizes:
                folder = base / f"imagenet-like-{n}"
                if not (folder / "done").exists():
                    generate(folder / "images", n, args.unique)
                    (folder / "done").touch()
                shards[n] = folder / f"shards-{STORE}"
                if not (shards[n] / "manifest.json").exists():
                    p = work / f"shard-{n}.yaml"
                    p.write_text(yaml.safe_dump(params_for(REPO, folder / "images", n)))
                    subprocess.run([sys.executable, "stages/shard.py", "--params", str(p), "--out", str(shards[n])],
                                   cwd=REPO, check=True, capture_output=True)
            counts = {n: json.loads((shards[n] / "manifest.json").read_text())["splits"] for n in sizes}
            runs = {}
            for protocol in protocols:
                for n in sizes:
                    for name, tree in trees.items():
                        p = work / f"params-{n}-{rev if tree == old else 'new'}.yaml"
                        p.write_text(yaml.safe_dump(params_for(tree, shards[n].parent / "images", n)))
                        cmd = [sys.executable, str(tree / "stages" / "evaluate.py"), protocol, "--baseline", "random_init",
                               "--params", str(p), "--shards", str(shards[n]), "--metrics", str(work / "m.json"),
                               "--details", str(work / "d.json")]
                        runs[(protocol, n, name)] = res = measured(cmd, work, dict(os.environ, PYTHONPATH=str(tree)), work)
                        print(f"{protocol} n={n} {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in res.items()),
                              file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)

    lo, hi = min(sizes), max(sizes)
    print(f"evaluate stages (random-init baseline, width-16 ResNet) on ImageNet-like photos stored at {STORE} px JPEG; "
          f"{os.cpu_count()} CPUs; one run each\n")
    print("splits: " + "; ".join(f"{n} photos: train {c['train']['count']}, val {c['val']['count']}, test {c['test']['count']}"
                                 for n, c in counts.items()) + "\n")
    print(f"| protocol | code | max RSS MiB at {lo} | at {hi} | ratio | peak anon MiB at {lo} | at {hi} | ratio | wall s at {lo} | at {hi} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for protocol in protocols:
        for name in trees:
            a, b = runs[(protocol, lo, name)], runs[(protocol, hi, name)]
            print(f"| {protocol} | {name} | {a['max_rss_mib']:.0f} | {b['max_rss_mib']:.0f} | {b['max_rss_mib'] / a['max_rss_mib']:.2f} | "
                  f"{a['anon_mib']:.0f} | {b['anon_mib']:.0f} | {b['anon_mib'] / a['anon_mib']:.2f} | {a['wall_s']:.0f} | {b['wall_s']:.0f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,80000")
    ap.add_argument("--rev", default="HEAD~1", help="the earlier revision to compare with")
    ap.add_argument("--protocols", default="finetune,linear_eval,label_efficiency,knn")
    ap.add_argument("--unique", type=int, default=1000, help="distinct photos per folder (the rest: hard links)")
    ap.add_argument("--keep", default=None, help="folder for the generated images and shards (kept, reused)")
    ap.add_argument("--record", default="eval_memory", help="results/<this>.md (keep another run's table)")
    cli = ap.parse_args()
    with recorded(cli.record):
        main(cli)
