"""Pretraining input path: DataLoader workers decoding the batches vs decoding in the
training process, on the default shards (run `dvc repro shard` first).

    python benchmarks/input_path.py [--shards data/shards] [--workers 0,1,2] [--rounds 5] [--steps 12]

Two measurements per worker count, interleaved round by round (this machine is shared and
noisy), medians over rounds and ratios to ``workers=0``:
- data only: batches of ``pretrain.batch_size`` read and decoded, images/s;
- training: SimCLR's default step (views, forward, backward, SGD) on those batches, images/s.
Each round starts a fresh epoch stream (worker start-up included) and times the batches
after the first (warm-up). Prints a markdown table; writes benchmarks/results/input_path.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _rate(batches, steps: int, step_fn) -> float:
    """images/s over batches 2..steps+1 of ``batches`` (the first is warm-up)."""
    it = iter(batches)
    step_fn(next(it))
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x = next(it)
        step_fn(x)
        n += x[0].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    from pipeline.config import load_params
    from pipeline.data.loader import epoch_batches
    from pipeline.shards.manifest import read_manifest
    from pipeline.registry import METHODS
    from pipeline.modalities.encoders import build_encoder
    from pipeline.train.optim import build_optimizer, param_groups

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    params = load_params(REPO / "params.yaml")
    p = params.pretrain_for("simclr")
    manifest = read_manifest(args.shards)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    method = METHODS.get("simclr")(build_encoder(params.encoder_for("simclr"), manifest), params.method_params["simclr"],
                                    params.augment, params.seed, cpu)
    optimizer = build_optimizer(param_groups(method, params=method.optimized_parameters()), p, 1)

    def train_step(batch):
        optimizer.zero_grad(set_to_none=True)
        method(batch[0])["loss"].backward()
        optimizer.step()

    workers = [int(w) for w in args.workers.split(",")]
    rates = {(kind, w): [] for kind in ("data", "train") for w in workers}
    for r in range(args.rounds):
        for w in workers:
            for kind, fn in (("data", lambda b: None), ("train", train_step)):
                batches = epoch_batches(args.shards, "pretrain", p.batch_size, p.shuffle_buffer, 1000 * r, w, cpu)
                rates[(kind, w)].append(_rate(batches, args.steps, fn))
                batches.close()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    rows = []
    for kind in ("data", "train"):
        base = statistics.median(rates[(kind, workers[0])])
        for w in workers:
            med = statistics.median(rates[(kind, w)])
            rows.append({"measure": kind, "workers": w, "images_per_s": round(med, 1), "ratio": round(med / base, 2),
                         "rounds": [round(x, 1) for x in rates[(kind, w)]]})
    print(f"\nbatch {p.batch_size}, {manifest['image_size']}x{manifest['image_size']}x{manifest['channels']} PNG, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds x {args.steps} batches, medians\n")
    print("| measure | loader workers | images/s | vs 0 workers |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['measure']} | {row['workers']} | {row['images_per_s']:,.0f} | {row['ratio']:.2f}x |")
    out = REPO / "benchmarks" / "results" / "input_path.json"
    out.write_text(json.dumps({"host": platform.node(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    with recorded("input_path"):
        main()
