"""The linear probe's two solvers side by side on the CPU default's data, and kNN's single
top-k search against the per-k search it replaced.

    python benchmarks/probe_backends.py --shards data/shards [--repeats 1]
    python benchmarks/probe_backends.py --smoke --shards DIR     # tiny: what a test runs

On the default's shards (Fashion-MNIST: 10k train, 5k val, 10k test) and the two baselines that
need no training, raw pixels ([N, 784]) and the seeded random-init encoder ([N, 256]): the
linear probe (linear_eval's c_grid and max_iter) by scikit-learn and by torch L-BFGS, runs
interleaved, median wall seconds; the issue's tolerance is 0.3 points of test top-1 between them.
Then kNN at knn.ks from one search at the largest k (``knn_accuracies``) against one search per
k (``knn_accuracy``, the code before): the accuracies must be identical.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.config import load_params  # noqa: E402
from pipeline.shards.manifest import read_manifest  # noqa: E402
from pipeline.eval.baselines import baseline_encoder  # noqa: E402
from pipeline.modalities.image.baseline import pixel_features  # noqa: E402
from pipeline.eval.algorithms.knn import knn_accuracies, knn_accuracy  # noqa: E402
from pipeline.eval.algorithms.linear import linear_probe  # noqa: E402
from pipeline.eval.protocol import EvalContext  # noqa: E402

CPU = torch.device("cpu")


def compare(shards: str, params, repeats: int, c_grid=None, max_iter=None, names=("random_init", "raw_pixels"),
            report=None) -> list[dict]:
    """One row per baseline: both probes' top-1, chosen C and median seconds; kNN per k both ways
    (``report(row)`` is called as each row is done)."""
    manifest = read_manifest(shards)
    le = params.protocol_params["linear_eval"]
    c_grid, max_iter = c_grid or le.c_grid, max_iter or le.max_iter
    rows = []
    for name in names:
        enc = baseline_encoder(params, name, manifest)
        ctx = EvalContext(name, enc, False, shards, manifest, params, CPU, featurizer=pixel_features if enc is None else None)
        train, val, test = (ctx.features(s) for s in ("train", "val", "test"))
        res, secs = {}, {"sklearn": [], "torch": []}
        for _ in range(repeats):
            for backend in ("sklearn", "torch"):  # interleaved: the machine's load hits both alike
                start = time.perf_counter()
                res[backend] = linear_probe(train, val, test, c_grid, max_iter, backend=backend, seed=params.seed)
                secs[backend].append(time.perf_counter() - start)
        knn = params.protocol_params["knn"]
        ks = [k for k in knn.ks if k <= len(train[1])]
        one = knn_accuracies(*train, *test, ks, knn.temperature, CPU)
        per_k = {k: knn_accuracy(*train, *test, k, knn.temperature) for k in ks}
        rows.append({"baseline": name, "dim": train[0].shape[1], "res": res,
                     "secs": {b: statistics.median(s) for b, s in secs.items()}, "knn_one": one, "knn_per_k": per_k})
        if report:
            report(rows[-1])
    return rows


def main(args: argparse.Namespace) -> None:
    params = load_params(str(REPO / "params.yaml"))
    kw = {"c_grid": [1.0], "max_iter": 20} if args.smoke else {}
    counts = {s: read_manifest(args.shards)["splits"][s]["count"] for s in ("train", "val", "test")}
    print(f"linear probe backends on {args.shards} ({counts}); {os.cpu_count()} CPUs; median of {args.repeats}\n")
    print("| features | dim | sklearn top-1 | torch top-1 | diff (points) | sklearn C | torch C | sklearn s | torch s | "
          "kNN one search = per k |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|", flush=True)
    compare(args.shards, params, args.repeats, names=args.features.split(","), report=_row, **kw)


def _row(r: dict) -> None:
    """Print one baseline's row of the table."""
    sk, th = r["res"]["sklearn"], r["res"]["torch"]
    same = all(r["knn_one"][k] == r["knn_per_k"][k] for k in r["knn_one"])
    knn = ", ".join(f"k={k}: {100 * v:.2f}%" for k, v in r["knn_one"].items())
    print(f"| {r['baseline']} | {r['dim']} | {100 * sk['top1']:.2f}% | {100 * th['top1']:.2f}% | "
          f"{100 * (th['top1'] - sk['top1']):+.2f} | {sk['best_c']:g} | {th['best_c']:g} | {r['secs']['sklearn']:.1f} | "
          f"{r['secs']['torch']:.1f} | {'identical' if same else 'DIFFERENT'} ({knn}) |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--features", default="random_init,raw_pixels", help="baselines, in this order")
    ap.add_argument("--smoke", action="store_true", help="one C, 20 iterations (for a test on tiny shards)")
    cli = ap.parse_args()
    if cli.smoke:
        main(cli)
    else:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from record import recorded

        with recorded("probe_backends"):
            main(cli)
