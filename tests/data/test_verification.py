"""Readers trust a shard only after checking it: sha256 (once per process), the number of
samples each shard gives, and every sample's bytes."""

import hashlib
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest

from pipeline.modalities.image import codec
from pipeline.shards import verify
from pipeline.modalities.image.codec import write_image_shards
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split, stream_batches
from pipeline.modalities.image.sources import ImageSet
from pipeline.errors import UserError


@pytest.fixture
def copy(tiny_shards, tmp_path):
    """A private copy of the tiny shards, and a fresh verification cache."""
    out = tmp_path / "shards"
    shutil.copytree(tiny_shards, out)
    return out


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(verify, "_VERIFIED", set())


def _edit_manifest(folder, edit):
    m = read_manifest(folder)
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _keep_first(folder, name, n_samples):
    """Cut a shard at a sample boundary and record its new sha256, as a manifest written
    after the damage would: the hash check passes, only the counts can tell."""
    path = folder / name
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    keys = sorted({m.name.split(".")[0] for m, _ in members})[:n_samples]
    with tarfile.open(path, "w") as dst:
        for m, data in members:
            if m.name.split(".")[0] in keys:
                dst.addfile(m, io.BytesIO(data))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    split = name.split("-")[0]
    _edit_manifest(folder, lambda m: m["splits"][split]["shards"].__setitem__(name, digest))


def _stream(folder, split="train"):
    return list(stream_batches(folder, split, 50, 1000, seed=0))


def test_manifest_records_per_shard_counts(tiny_shards):
    m = read_manifest(tiny_shards)
    assert m["splits"]["train"]["shard_counts"] == {"train-000000.tar": 150, "train-000001.tar": 150, "train-000002.tar": 100}
    assert all(sum(v["shard_counts"].values()) == v["count"] for v in m["splits"].values())
    assert m["skipped_files"] == {"count": 0, "examples": []}


def test_stream_verifies_sha256(copy):
    shard = copy / "train-000001.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="train-000001.tar is corrupt .*dvc repro -f shard"):
        _stream(copy)


def test_each_shard_hashed_once_per_process(copy, monkeypatch):
    """load_split hashes up front, once per process; streaming hashes as it reads (no
    up-front pass) and counts as verified for the up-front readers."""
    calls = []
    real = verify.sha256
    monkeypatch.setattr(verify, "sha256", lambda p: calls.append(p.name) or real(p))
    for _ in range(2):
        load_split(copy, "val")
    assert sorted(calls) == ["val-000000.tar", "val-000001.tar"]
    for _ in range(2):  # two epochs, and the evaluations' full reads
        _stream(copy)
        load_split(copy, "train")
    assert sorted(calls) == ["val-000000.tar", "val-000001.tar"]


def test_shard_changed_after_verification_is_hashed_again(copy):
    load_split(copy, "val")
    shard = copy / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # coarse clocks: make the change visible
    with pytest.raises(UserError, match="val-000000.tar is corrupt"):
        load_split(copy, "val")


def test_shard_cut_at_sample_boundary_fails_both_readers(copy):
    _keep_first(copy, "train-000000.tar", 100)
    msg = "train-000000.tar gave 100 samples but manifest.json says 150; re-create the shards"
    with pytest.raises(UserError, match=msg):
        load_split(copy, "train")
    with pytest.raises(UserError, match=msg):
        _stream(copy)


def test_shard_that_gives_no_samples_fails_both_readers(copy):
    _keep_first(copy, "train-000001.tar", 0)  # a valid, empty tar
    with pytest.raises(UserError, match="train-000001.tar gave 0 samples but manifest.json says 150"):
        load_split(copy, "train")
    with pytest.raises(UserError, match="train-000001.tar gave 0 samples but manifest.json says 150"):
        _stream(copy)


def test_old_manifest_without_shard_counts(copy):
    drop = lambda m: [v.pop("shard_counts") for v in m["splits"].values()]  # noqa: E731
    _edit_manifest(copy, drop)
    assert load_split(copy, "train")[0].shape[0] == 400 and len(_stream(copy)) == 8
    _keep_first(copy, "train-000002.tar", 60)  # falls back to the split's count
    msg = "split 'train' in .* gave 360 samples but manifest.json says 400"
    with pytest.raises(UserError, match=msg):
        load_split(copy, "train")
    with pytest.raises(UserError, match=msg):
        _stream(copy)


def test_every_rank_checks_an_old_manifests_split_total(copy):
    """Under DDP every rank reads every shard (decoding only its own samples), so even an
    old manifest's split total, which no rank's own share adds up to, is checked on each."""
    _edit_manifest(copy, lambda m: m["splits"]["train"].pop("shard_counts"))
    _keep_first(copy, "train-000000.tar", 100)
    for rank in (0, 1):
        with pytest.raises(UserError, match="split 'train' in .* gave 350 samples but manifest.json says 400"):
            list(stream_batches(copy, "train", 50, 1000, seed=3, rank=rank, world_size=2))


@pytest.fixture
def garbage_sample_shards(tmp_path, monkeypatch):
    """Shards whose sample 5 holds garbage bytes as its .png, written before the manifest
    (so every sha256 matches)."""
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (12, 28, 28, 1), dtype=np.uint8)
    images[5] = 0
    data = ImageSet(images, np.arange(12) % 2, ["a", "b"])
    real = codec._png
    monkeypatch.setattr(codec, "_png", lambda im: b"not a png at all" if not im.any() else real(im))
    out = tmp_path / "garbage"
    write_image_shards({s: data for s in ("pretrain", "train", "val", "test")}, out, 8, source={})
    monkeypatch.setattr(codec, "_png", real)
    return out


@pytest.mark.parametrize("split", ["train", "pretrain"])
def test_corrupt_sample_names_shard_and_key(garbage_sample_shards, split):
    msg = rf"cannot decode sample '{split}_00000005' in shard .*{split}-000000.tar \(UnidentifiedImageError"
    with pytest.raises(UserError, match=msg):
        load_split(garbage_sample_shards, split)
    with pytest.raises(UserError, match=msg):
        list(stream_batches(garbage_sample_shards, split, 4, 10, seed=0))


def test_sample_of_wrong_size_is_named(tmp_path, monkeypatch):
    images = np.full((4, 28, 28, 1), 7, dtype=np.uint8)
    images[2] = 0
    real = codec._png
    odd = real(np.zeros((30, 30, 1), np.uint8))
    monkeypatch.setattr(codec, "_png", lambda im: odd if not im.any() else real(im))
    write_image_shards({s: ImageSet(images, np.arange(4) % 2, ["a", "b"]) for s in ("pretrain", "train", "val", "test")},
                 tmp_path, 8, source={})
    with pytest.raises(UserError, match="sample 'val_00000002' .*image is 30x30, manifest.json says 28x28"):
        load_split(tmp_path, "val")
