"""The linear probe's C sweep as a warm-started path against independent fits, on the
default runs' own features: TF-IDF of the text default (5,000 features, 23 classes) and the
image SimCLR encoder's (256-d, 10 classes).

    python benchmarks/linear_path.py [--rounds 3]

"cold" is the probe as it was: every C of the grid fitted from zero, then the chosen C
refitted on train+val from zero. "path" is `pipeline.eval.algorithms.linear.linear_probe`: C from strong
to weak, each fit started from the previous C's solution, the refit from the chosen C's.
Both use the stage's `c_grid` and `max_iter`. Rounds interleave the two; medians of seconds,
the ratio, and each side's chosen C and test top-1 (the same in every round).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cold_probe(train, val, test, c_grid: list[float], max_iter: int) -> dict:
    """The probe before the path: independent fits (the baseline this benchmark measures against)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    val_acc = {c: LogisticRegression(C=c, max_iter=max_iter).fit(scaler.transform(train[0]), train[1])
               .score(scaler.transform(val[0]), val[1]) for c in sorted(c_grid)}
    best_c = max(val_acc, key=lambda c: (val_acc[c], -c))
    x_all, y_all = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    scaler = StandardScaler().fit(x_all)
    clf = LogisticRegression(C=best_c, max_iter=max_iter).fit(scaler.transform(x_all), y_all)
    return {"top1": float(clf.score(scaler.transform(test[0]), test[1])), "best_c": best_c}


def feature_sets() -> dict[str, tuple[list, list[float], int]]:
    """name -> ([train, val, test] as (features, labels)), c_grid, max_iter)."""
    from pipeline.config import load_params
    from pipeline.shards.read import load_split
    from pipeline.eval.features import encoder_features
    from pipeline.modalities.text.tfidf import tfidf_featurizer
    from pipeline.modalities.encoders import load_encoder

    out = {}
    text = load_params(REPO / "params.yaml", preset="text")
    shards = REPO / "text" / "data" / "shards"
    featurize = tfidf_featurizer(shards, text.text.tfidf_max_features)
    splits = [load_split(shards, s) for s in ("train", "val", "test")]
    out["TF-IDF, text default"] = ([(featurize(x), y.numpy()) for x, y in splits], text.protocol_params["linear_eval"].c_grid,
                                   text.protocol_params["linear_eval"].max_iter)
    image = load_params(REPO / "params.yaml")
    shards = REPO / "data" / "shards"
    featurize = encoder_features(load_encoder(REPO / "models" / "simclr" / "encoder.pt"), torch.device("cpu"))
    splits = [load_split(shards, s) for s in ("train", "val", "test")]
    out["SimCLR, image default"] = ([(featurize(x), y.numpy()) for x, y in splits], image.protocol_params["linear_eval"].c_grid,
                                    image.protocol_params["linear_eval"].max_iter)
    return out


def main() -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from pipeline.eval.algorithms.linear import linear_probe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # max_iter binds on both sides alike
    print("| features | C grid, max_iter | cold s | path s | cold / path | cold: C, test top-1 | path: C, test top-1 |")
    print("|---|---|---:|---:|---:|---|---|")
    for name, (data, c_grid, max_iter) in feature_sets().items():
        seconds: dict[str, list[float]] = {"cold": [], "path": []}
        result = {}
        for _ in range(args.rounds):
            for side, probe in (("cold", cold_probe), ("path", linear_probe)):
                t0 = time.perf_counter()
                result[side] = probe(*data, c_grid=c_grid, max_iter=max_iter)
                seconds[side].append(time.perf_counter() - t0)
        cold, path = (statistics.median(seconds[s]) for s in ("cold", "path"))
        print(f"| {name} | {c_grid}, {max_iter} | {cold:.1f} | {path:.1f} | {cold / path:.2f}x | "
              f"{result['cold']['best_c']:g}, {100 * result['cold']['top1']:.2f} | "
              f"{result['path']['best_c']:g}, {100 * result['path']['top1']:.2f} |", flush=True)


if __name__ == "__main__":
    with recorded("linear_path"):
        main()
