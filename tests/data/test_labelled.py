"""Labelled training sets streamed from the shards (``pipeline/data/labelled.py``, the
multi-split and ``keep`` streams of ``stream_batches``): every sample once an epoch,
only the kept ones decoded, a fresh seeded order each epoch, equal shares under DDP."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch

from pipeline import dist
from pipeline.data import loader
from pipeline.shards import read as shards_read
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split, stream_batches
from pipeline.shards.write import write_subset
from pipeline.data.labelled import steps_per_epoch, streamed

CPU = torch.device("cpu")


def rows(x: torch.Tensor) -> list[bytes]:
    """Each image's bytes, sorted: a batch's content regardless of order."""
    return sorted(img.numpy().tobytes() for img in x)


def test_two_splits_stream_as_one_with_every_sample_once(tiny_shards):
    (xtr, _), (xva, _) = load_split(tiny_shards, "train"), load_split(tiny_shards, "val")
    batches = list(stream_batches(tiny_shards, ("train", "val"), 64, 1000, seed=3, drop_last=False))
    assert [len(b[0]) for b in batches] == [64] * 9 + [24]  # 400 + 200
    assert rows(torch.cat([x for x, _ in batches])) == rows(torch.cat([xtr, xva]))
    full = list(stream_batches(tiny_shards, ("train", "val"), 64, 1000, seed=3))
    assert len(full) == 9  # full batches only by default


def test_write_subset_copies_only_the_kept_samples(tiny_shards, tmp_path):
    keep = {"train": np.array([0, 5, 17, 399]), "val": np.array([1, 199])}
    assert write_subset(tiny_shards, ("train", "val"), keep, tmp_path, shard_size=4) == 6
    manifest = read_manifest(tmp_path)
    assert list(manifest["splits"]) == ["subset"] and manifest["splits"]["subset"]["shard_counts"] == {
        "subset-000000.tar": 4, "subset-000001.tar": 2}
    (xtr, ytr), (xva, yva) = load_split(tiny_shards, "train"), load_split(tiny_shards, "val")
    x, y = load_split(tmp_path, "subset")  # shard order: the kept train samples, then val's
    assert torch.equal(x, torch.cat([xtr[keep["train"]], xva[keep["val"]]]))
    assert torch.equal(y, torch.cat([ytr[keep["train"]], yva[keep["val"]]]))


def test_streamed_set_reshuffles_each_epoch_with_labels_in_place(tiny_shards):
    data = streamed(tiny_shards, ("train", "val"), 1000, workers=0, device=CPU)
    assert data.count == 600
    batches = data.batches_for(64, 0)
    e0, again, e1 = list(batches(0)), list(batches(0)), list(batches(1))
    assert len(e0) == steps_per_epoch(600, 64) == 9
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(e0, again))  # seeded
    assert not torch.equal(e0[0][0], e1[0][0])
    assert not torch.equal(e0[0][0], list(data.batches_for(64, 1)(0))[0][0])  # the seed matters
    # every image keeps its own label: the same (image, label) pairs as the splits in memory
    pairs = lambda bs: sorted((x.numpy().tobytes(), int(y)) for xb, yb in bs for x, y in zip(xb, yb))  # noqa: E731
    whole = [load_split(tiny_shards, s) for s in ("train", "val")]
    assert set(pairs(e0)) <= set(pairs(whole))


@pytest.mark.parametrize("world", [2, 3])
def test_streamed_ranks_take_equal_disjoint_shares(tiny_shards, monkeypatch, world):
    keep = {"train": np.arange(0, 400, 2), "val": np.arange(100)}  # 300 samples
    seen = []
    for rank in range(world):
        monkeypatch.setattr(dist, "world_size", lambda: world)
        monkeypatch.setattr(dist, "rank", lambda rank=rank: rank)
        data = streamed(tiny_shards, ("train", "val"), 1000, workers=0, device=CPU, keep=keep)
        batches = list(data.batches_for(16, 0)(0))
        assert len(batches) == steps_per_epoch(300, 16) == 300 // (16 * world)
        seen.append(rows(torch.cat([x for x, _ in batches])))
    flat = [r for rank_rows in seen for r in rank_rows]
    assert len(set(flat)) == len(flat)  # no sample on two ranks


def test_a_kept_subset_streams_from_its_own_copy(tiny_shards, monkeypatch):
    """With ``keep``, the set copies the subset once (still encoded) and each epoch reads only
    that copy: the same samples and labels, none of the others read again; the copy goes
    with the set."""
    keep = {"train": np.array([3, 150, 151, 398]), "val": np.array([0, 120])}
    data = streamed(tiny_shards, ("train", "val"), 1000, workers=0, device=CPU, keep=keep)
    scratch = data.scratch.name
    assert data.count == 6 and read_manifest(scratch)["splits"]["subset"]["count"] == 6
    read = []
    real = shards_read.shard_paths
    for module in (shards_read, loader):  # the readers' and the loader's checks
        monkeypatch.setattr(module, "shard_paths", lambda d, s, **kw: read.append(s) or real(d, s, **kw))
    (x, y), = data.batches_for(6, 0)(0)
    assert set(read) == {"subset"}  # the splits themselves are not read again
    (xtr, ytr), (xva, yva) = load_split(tiny_shards, "train"), load_split(tiny_shards, "val")
    pairs = sorted((img.numpy().tobytes(), int(label)) for img, label in zip(x, y))
    expected = sorted((img.numpy().tobytes(), int(label)) for img, label in
                      zip(torch.cat([xtr[keep["train"]], xva[keep["val"]]]), torch.cat([ytr[keep["train"]], yva[keep["val"]]])))
    assert pairs == expected
    del data
    gc.collect()
    assert not os.path.exists(scratch)
