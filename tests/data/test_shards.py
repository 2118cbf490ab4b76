import hashlib
import json

import numpy as np
import pytest
import torch

from pipeline.config import DataParams
from pipeline.modalities.image.codec import write_image_shards
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split, stream_batches
from pipeline.modalities.image.sources import ImageSet
from pipeline.shards.splits import make_splits
from pipeline.errors import UserError


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_input_gives_byte_identical_shards(fmnist_small, tmp_path):
    train, test = fmnist_small
    params = DataParams(val_size=100, shard_size=128, pretrain_size=None, train_size=None)
    for d in ("a", "b"):
        write_image_shards(make_splits(train, test, params, seed=0), tmp_path / d, 128, source={})
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_image_shards(make_splits(train, test, params, seed=1), tmp_path / "c", 128, source={})
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_manifest_counts_and_hashes(tiny_shards):
    m = read_manifest(tiny_shards)
    assert {s: v["count"] for s, v in m["splits"].items()} == {"pretrain": 400, "train": 400, "val": 200, "test": 300}
    assert sum(m["splits"]["test"]["per_class"].values()) == 300
    assert m["splits"]["pretrain"]["per_class"] is None
    assert list(m["splits"]["train"]["shards"]) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert m["image_size"] == 28 and m["channels"] == 1 and len(m["classes"]) == 10
    assert "modality" not in m and "tokenizer" not in m  # an image manifest as before the text modality


def test_roundtrip_is_lossless(fmnist_small, tiny_shards):
    _, test = fmnist_small
    x, y = load_split(tiny_shards, "test")
    assert x.dtype == torch.uint8 and x.shape == (300, 1, 28, 28)
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), test.images)
    np.testing.assert_array_equal(y.numpy(), test.labels)


def test_pretrain_shards_carry_no_labels(tiny_shards):
    _, y = load_split(tiny_shards, "pretrain")
    assert (y == -1).all()


def test_stream_is_seeded_shuffled_and_complete(tiny_shards):
    run = lambda seed: [b for b in stream_batches(tiny_shards, "train", 50, 1000, seed)]  # noqa: E731
    a, b, c = run(3), run(3), run(4)
    assert len(a) == 8 and all(x.shape == (50, 1, 28, 28) for x, _ in a)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, b))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    streamed = torch.cat([y for _, y in a]).sort().values
    assert torch.equal(streamed, load_split(tiny_shards, "train")[1].sort().values)


def test_corrupt_shard_is_named(tiny_shards, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_shards, bad)
    shard = bad / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[2000] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(UserError, match="val-000000.tar is corrupt"):
        load_split(bad, "val")


def test_missing_manifest(tmp_path):
    with pytest.raises(UserError, match="dvc repro shard"):
        load_split(tmp_path, "train")


def test_splits_disjoint_and_sized(fmnist_small):
    train, test = fmnist_small
    s = make_splits(train, test, DataParams(val_size=100, train_size=300, pretrain_size=400, test_size=50), seed=0)
    assert [len(s[k]) for k in ("pretrain", "train", "val", "test")] == [400, 300, 100, 50]
    key = lambda a: {im.tobytes() for im in a.images}  # noqa: E731
    assert not key(s["val"]) & key(s["train"]) and not key(s["val"]) & key(s["pretrain"])
    with pytest.raises(UserError, match="train_size"):
        make_splits(train, test, DataParams(val_size=100, train_size=10_000, pretrain_size=None), seed=0)
    json.dumps({"ok": True})


def test_a_test_subset_is_seeded_and_spans_a_class_ordered_test_set():
    """``data.test_size`` below the test set takes a seeded random subset in source order, not a
    prefix: fortunes and ImageFolders list their samples class by class."""
    train, test = _data([0, 1, 2] * 20), _data([0] * 100 + [1] * 100 + [2] * 100)
    params = DataParams(val_size=3, pretrain_size=None, train_size=None, test_size=30)
    a, b = (make_splits(train, test, params, seed=0)["test"] for _ in range(2))
    assert len(a) == 30 and set(a.labels.tolist()) == {0, 1, 2}
    assert np.array_equal(a.labels, b.labels) and np.all(np.diff(a.labels) >= 0)  # the same subset, in source order
    assert not np.array_equal(make_splits(train, test, params, seed=1)["test"].labels, a.labels)
    full = make_splits(train, test, params.model_copy(update={"test_size": None}), seed=0)["test"]
    assert np.array_equal(full.labels, test.labels)  # null: the whole test set as it is


def _data(labels, classes=("a", "b", "c"), skipped=()):
    labels = np.asarray(labels, dtype=np.int64)
    return ImageSet(np.zeros((len(labels), 28, 28, 1), np.uint8), labels, list(classes), tuple(skipped))


def test_one_class_dataset_is_refused_naming_the_source():
    with pytest.raises(UserError, match="data.source=torchvision at data.root=/data/x needs at least two classes"):
        make_splits(_data([1] * 20), _data([1] * 5), DataParams(source="torchvision", root="/data/x", val_size=2, pretrain_size=None, train_size=None), seed=0)


def test_class_absent_from_the_source_is_named():
    with pytest.raises(UserError, match=r"train set has no images of class\(es\) \['c'\]"):
        make_splits(_data([0, 1] * 10), _data([0, 1, 2]), DataParams(val_size=2, pretrain_size=None, train_size=None), seed=0)


def test_class_missing_from_labelled_train_split_names_the_keys(fmnist_small):
    train, test = fmnist_small
    with pytest.raises(UserError, match=r"labelled train split has no images of class\(es\) .*raise data.train_size"):
        make_splits(train, test, DataParams(val_size=100, train_size=5, pretrain_size=None), seed=0)


def test_empty_test_split_names_the_key():
    with pytest.raises(UserError, match="split 'test' is empty .*change data.test_size"):
        make_splits(_data([0, 1, 2] * 5), _data([]), DataParams(val_size=2, pretrain_size=None, train_size=None), seed=0)


def test_skipped_source_files_reach_the_manifest(tmp_path):
    train = _data([0, 1, 2] * 5, skipped=["a/notes.txt", "b/.DS_Store"])
    splits = make_splits(train, _data([0, 1, 2], skipped=["test/c/x.md"]), DataParams(val_size=3, pretrain_size=None, train_size=None), seed=0)
    assert all(s.skipped == train.skipped for k, s in splits.items() if k != "test")
    m = write_image_shards(splits, tmp_path, 8, source={})
    assert m["skipped_files"] == {"count": 3, "examples": ["a/notes.txt", "b/.DS_Store", "test/c/x.md"]}
    assert read_manifest(tmp_path)["skipped_files"]["count"] == 3
