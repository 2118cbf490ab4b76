"""Frozen text features: forward passes over length-sorted batches of 128 (what
``encoder_features`` does) vs the split as it comes in batches of 1,024 (cut to the longest
entry of each batch, which at 1,024 entries is nearly always ``text.max_length``).

    python benchmarks/text_features.py [--shards text/data/shards] [--encoder text/models/mlm/encoder.pt] [--rounds 5]

Both on the same entries (the train split), interleaved round by round (this machine is shared
and noisy); medians over rounds, the ratio, and the largest difference between the two
feature matrices. Prints a markdown table; writes benchmarks/results/text_features.json.
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


def main() -> None:
    from pipeline.shards.read import load_split
    from pipeline.eval.features import BATCH, encoder_features
    from pipeline.modalities.encoders import load_encoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", default="text/data/shards")
    ap.add_argument("--encoder", default="text/models/mlm/encoder.pt")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    encoder = load_encoder(args.encoder)
    x, _ = load_split(args.shards, "train")
    lengths = x[:, 1].sum(1).float()

    @torch.no_grad()
    def unsorted(batch: torch.Tensor):
        return torch.cat([encoder(batch[i : i + BATCH]) for i in range(0, len(batch), BATCH)]).numpy()

    sorted_ = encoder_features(encoder, torch.device("cpu"))
    times: dict[str, list[float]] = {"batches of 1,024 as they come": [], "length-sorted batches of 128": []}
    results = {}
    for _ in range(args.rounds):
        for name, fn in zip(times, (unsorted, sorted_)):
            t0 = time.perf_counter()
            results[name] = fn(x)
            times[name].append(time.perf_counter() - t0)
    a, b = results.values()
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["batches of 1,024 as they come"]
    print(f"{len(x)} entries, max_length {x.shape[-1]}, mean length {lengths.mean():.1f}; torch threads {torch.get_num_threads()}; "
          f"max |difference| {abs(a - b).max():.2e}\n")
    print("| forward passes | median s | entries/s | vs batches of 1,024 |\n|---|---:|---:|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {len(x) / v:,.0f} | {base / v:.2f}x |")
    out = REPO / "benchmarks" / "results" / "text_features.json"
    out.write_text(json.dumps({"entries": len(x), "max_length": x.shape[-1], "mean_length": float(lengths.mean()),
                               "threads": torch.get_num_threads(), "rounds": args.rounds, "seconds": times, "median_s": med,
                               "max_abs_difference": float(abs(a - b).max()), "machine": platform.machine()}, indent=1) + "\n")


if __name__ == "__main__":
    with recorded("text_features"):
        main()
