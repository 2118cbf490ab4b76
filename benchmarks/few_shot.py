"""Few-shot episodes fitted in one process against the cores' worth of worker processes, on
the image default's SimCLR test features (`models/simclr/encoder.pt`, from `dvc repro`).

    python benchmarks/few_shot.py [--rounds 3] [--workers 2]

Runs the few-shot stage's settings (`few_shot:` in params.yaml: its ways, shots, queries and
episodes) for each classifier, once with `workers=1` and once with `--workers` (default: the
cores available), round by round (interleaved). Medians of seconds, the ratio, and whether
the two gave the same numbers (they must: the episodes are drawn in this process either way).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from pipeline.config import load_params
    from pipeline.shards.read import load_split
    from pipeline.dist import default_workers
    from pipeline.eval.features import encoder_features
    from pipeline.eval.algorithms.few_shot import few_shot
    from pipeline.modalities.encoders import load_encoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=default_workers(None))
    args = ap.parse_args()
    params = load_params(REPO / "params.yaml")
    fs = params.protocol_params["few_shot"]
    images, labels = load_split(REPO / "data" / "shards", "test")
    features = encoder_features(load_encoder(REPO / "models" / "simclr" / "encoder.pt"), torch.device("cpu"))(images)
    labels = labels.numpy()

    def run(classifier: str, workers: int) -> dict:
        return {ways: few_shot(features, labels, ways, fs.shots, fs.queries, fs.episodes, params.seed,
                               classifier=classifier, workers=workers) for ways in fs.ways}

    print(f"{len(features):,} test features of {features.shape[1]} dims; ways {fs.ways}, shots {fs.shots}, "
          f"{fs.episodes} episodes each, {args.rounds} rounds\n")
    print(f"| classifier | 1 process s | {args.workers} workers s | ratio | same results |")
    print("|---|---:|---:|---:|---|")
    for classifier in fs.classifiers:
        seconds: dict[int, list[float]] = {1: [], args.workers: []}
        results = {}
        for _ in range(args.rounds):
            for workers in seconds:
                t0 = time.perf_counter()
                results[workers] = run(classifier, workers)
                seconds[workers].append(time.perf_counter() - t0)
        one, many = (statistics.median(seconds[w]) for w in seconds)
        print(f"| {classifier} | {one:.1f} | {many:.1f} | {one / many:.2f}x | {results[1] == results[args.workers]} |", flush=True)


if __name__ == "__main__":
    with recorded("few_shot"):
        main()
