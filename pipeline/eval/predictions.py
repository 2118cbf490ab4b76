"""Per-example test predictions: what lets a review test a change for significance.

A protocol records, for a headline metric, the class it predicted for every test example (in
shard order) and the true labels; the evaluate stage writes them beside the metrics file as
``<metrics stem>.predictions.json``, a DVC output git tracks:

    {"labels": [int] * N, "predictions": {"<headline key>": [int] * N}}

JSON (compact, keys sorted) rather than .npy/.npz: byte-identical for the same predictions
(a zip carries a timestamp), readable without NumPy, about 2 bytes per example; a 10k test
split gives ~20 kB per metric. ``tools/review.py`` pairs head and base on the same examples
(McNemar's test).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def record(store: dict, metric: str, predicted, labels) -> None:
    """Add ``metric``'s predicted classes ``[N]`` for test labels ``[N]`` to ``store``;
    every metric of one file must be on the same examples (the same labels)."""
    predicted, labels = np.asarray(predicted).astype(int).ravel(), np.asarray(labels).astype(int).ravel()
    if predicted.shape != labels.shape:
        raise ValueError(f"{metric}: {predicted.shape[0]} predictions for {labels.shape[0]} labels")
    if "labels" in store and not np.array_equal(store["labels"], labels):
        raise ValueError(f"{metric}: predictions on other test examples than the file's other metrics")
    store["labels"] = labels
    store.setdefault("predictions", {})[metric] = predicted


def path_for(metrics_path: str | Path) -> Path:
    """``metrics/knn/simclr.json`` -> ``metrics/knn/simclr.predictions.json``."""
    p = Path(metrics_path)
    return p.with_name(p.name.removesuffix(".json") + ".predictions.json")


def to_bytes(store: dict) -> bytes:
    """The file's bytes: ``{}`` when no metric recorded predictions (a protocol without any)."""
    if not store:
        return b"{}\n"
    doc = {"labels": store["labels"].tolist(), "predictions": {k: v.tolist() for k, v in store["predictions"].items()}}
    return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
