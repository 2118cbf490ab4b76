"""Evaluation protocols shared by every method and every baseline.

Each takes a ``Featurizer`` (an encoder's frozen features, or raw pixels) so the SSL
encoder and the baselines are measured by the same code on the same splits.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.config import Params
from pipeline.data.shards import load_split
from pipeline.eval.features import Featurizer
from pipeline.eval.fewshot import few_shot
from pipeline.eval.knn import knn_accuracy
from pipeline.eval.linear import linear_probe
from pipeline.eval.transfer import load_transfer


def _images(data) -> torch.Tensor:
    return torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous()


def linear_and_knn(featurize: Featurizer, shard_dir: str, params: Params) -> dict:
    """Linear probe (train, C chosen on val, refit train+val) and kNN (train bank) on test."""
    feats = {}
    for split in ("train", "val", "test"):
        images, labels = load_split(shard_dir, split)
        feats[split] = (featurize(images), labels.numpy())
    out = {"linear": linear_probe(feats["train"], feats["val"], feats["test"], params.linear_eval.c_grid, params.linear_eval.max_iter)}
    for k in params.knn.ks:
        out[f"knn{k}_top1"] = knn_accuracy(*feats["train"], *feats["test"], k, params.knn.temperature)
    return out


def few_shot_eval(featurize: Featurizer, shard_dir: str, params: Params) -> dict:
    """Few-shot episodes on the test split's features: ``{classifier: {"<N>way_<K>shot": {mean, ci95}}}``
    for every configured classifier and N (5-way, all-way); the same episodes for every classifier."""
    images, labels = load_split(shard_dir, "test")
    feats, labels = featurize(images), labels.numpy()
    fs = params.few_shot
    out = {}
    for clf in fs.classifiers:
        out[clf] = {}
        for ways in fs.ways:
            out[clf].update(few_shot(feats, labels, ways, fs.shots, fs.queries, fs.episodes, params.seed, classifier=clf))
    return out


def transfer_eval(featurize: Featurizer, size: int, channels: int, params: Params) -> dict:
    """The linear probe protocol on every configured transfer dataset."""
    out = {}
    for name in params.transfer.datasets:
        sets = load_transfer(name, size, channels, params.transfer.root, params.transfer.test_fraction, params.seed)
        f = {s: (featurize(_images(d)), d.labels) for s, d in sets.items()}
        res = linear_probe(f["train"], f["val"], f["test"], params.linear_eval.c_grid, params.linear_eval.max_iter)
        out[name] = {"top1": res["top1"], "best_c": res["best_c"], "n_train": len(sets["train"]) + len(sets["val"]), "n_test": len(sets["test"])}
    return out


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
