"""How ``stream_batches`` shares an epoch between DDP ranks (no process group needed: the
rank and world size are passed in): by sample, equal batch counts, nothing read twice."""

from __future__ import annotations

import shutil

import pytest
import torch

from pipeline.shards import read, verify
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import stream_batches
from pipeline.errors import UserError


def _epoch(folder, rank, world, batch=50, seed=3):
    return list(stream_batches(folder, "train", batch, 1000, seed, rank=rank, world_size=world))


def _keys(batches):
    # images are unique enough in Fashion-MNIST to identify a sample by its bytes
    return [bytes(x.numpy()) for b in batches for x in b[0]]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_ranks_get_equal_batches_of_disjoint_samples(tiny_shards, world):
    """The 400 train images sit in 3 shards of 150, 150 and 100 (uneven on 2 or 4 ranks):
    every rank gets 400 // (50 * world) batches, no image goes to two ranks, and together
    they are the one-process stream's images in its order, dealt round-robin."""
    whole = _keys(_epoch(tiny_shards, 0, 1))
    per_rank = [_epoch(tiny_shards, r, world) for r in range(world)]
    assert {len(b) for b in per_rank} == {400 // (50 * world)}
    keys = [_keys(b) for b in per_rank]
    for r in range(world):
        assert keys[r] == whole[r::world][: len(keys[r])]  # DistributedSampler's interleaving
    assert len(set().union(*map(set, keys))) == sum(map(len, keys))


def test_one_process_stream_is_the_whole_split(tiny_shards):
    batches = _epoch(tiny_shards, 0, 1)
    assert len(batches) == 8 and all(b[0].shape == (50, 1, 28, 28) for b in batches)
    assert torch.equal(torch.cat([b[0] for b in batches]), torch.cat([b[0] for b in _epoch(tiny_shards, 0, 1)]))


def test_every_rank_checks_every_shard(tiny_shards, tmp_path, monkeypatch):
    """Each rank reads all shards (decoding only its own samples), so a shard with fewer
    samples than the manifest says fails on every rank, not only on the rank it was given."""
    monkeypatch.setattr(verify, "_VERIFIED", set())
    copy = tmp_path / "shards"
    shutil.copytree(tiny_shards, copy)
    manifest = read_manifest(copy)
    name = sorted(manifest["splits"]["train"]["shard_counts"])[1]
    manifest["splits"]["train"]["shard_counts"][name] += 1  # as if a sample went missing
    (copy / "manifest.json").write_text(__import__("json").dumps(manifest))
    for rank in (0, 1):
        with pytest.raises(UserError, match=f"{name} gave 150 samples but manifest.json says 151"):
            _epoch(copy, rank, 2)


@pytest.mark.parametrize("world", [1, 2])
def test_skipping_batches_gives_the_rest_of_the_epoch(tiny_shards, world, monkeypatch):
    """A resume inside an epoch: the batches after the position, the same as without the
    skip, and the skipped samples are not decoded (but still counted against the manifest)."""
    for rank in range(world):
        whole = _epoch(tiny_shards, rank, world)
        decoded = []
        real = read._decode
        monkeypatch.setattr(read, "_decode", lambda *a: decoded.append(1) or real(*a))
        rest = list(stream_batches(tiny_shards, "train", 50, 1000, 3, rank=rank, world_size=world, skip_batches=2))
        monkeypatch.setattr(read, "_decode", real)
        assert len(rest) == len(whole) - 2
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, whole[2:]))
        assert len(decoded) == sum(1 for i in range(400) if i % world == rank) - 2 * 50
