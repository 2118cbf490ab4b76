"""ImageFolder layouts: train/ + val/ (ImageNet's; val is the test split), train/ + test/, a
folder of class folders, an unlabelled ``data.pretrain_root`` beside the labelled folder, and
an ambiguous layout refused naming its folders."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.config import DataParams
from pipeline.modalities.image.datasets.imagefolder import image_folder_refs, image_tree_refs
from pipeline.shards.manifest import read_manifest
from pipeline.shards.splits import make_splits
from pipeline.errors import UserError
from stages import shard as shard_stage

REPO = Path(__file__).resolve().parents[2]


def _images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")


def _tree(root: Path, layout: dict[str, int]) -> Path:
    """``{"train/cat": 4, ...}``: that many images in each folder."""
    for i, (folder, n) in enumerate(layout.items()):
        _images(root / folder, n, seed=i)
    return root


@pytest.mark.parametrize("layout, n_train, n_test", [
    ({"train/cat": 4, "train/dog": 5, "val/cat": 2, "val/dog": 1}, 9, 3),  # ImageNet
    ({"train/cat": 4, "train/dog": 5, "test/cat": 2, "test/dog": 2}, 9, 4),
    ({"train/cat": 5, "train/dog": 5, "val/cat": 1, "val/dog": 1, "test/cat": 2, "test/dog": 1}, 10, 3),
    ({"cat": 5, "dog": 5}, 8, 2),  # test_fraction 0.2 held out
    ({"train/cat": 5, "train/dog": 5}, 8, 2),
], ids=["train+val", "train+test", "train+val+test", "classes", "train-only"])
def test_layouts(tmp_path, layout, n_train, n_test):
    train, test = image_folder_refs(str(_tree(tmp_path / "d", layout)), test_fraction=0.2, seed=0)
    assert train.classes == test.classes == ["cat", "dog"]
    assert (len(train), len(test)) == (n_train, n_test)


@pytest.mark.parametrize("layout, named", [
    ({"train/cat": 2, "train/dog": 2, "val/cat": 1, "val/dog": 1, "cow": 2}, "['train', 'val'] beside class folder(s) ['cow']"),
    ({"cat": 2, "test": 2}, "['test'] beside class folder(s) ['cat']"),
    ({"val/cat": 2, "val/dog": 2, "test/cat": 1, "test/dog": 1}, "['test', 'val'] beside no train/ folder"),
])
def test_ambiguous_layout_names_the_folders(tmp_path, layout, named):
    with pytest.raises(UserError, match=re.escape(f"is ambiguous: split folder(s) {named}")):
        image_folder_refs(str(_tree(tmp_path / "d", layout)), 0.2, 0)


def test_pretrain_root_makes_the_pretrain_split(tmp_path):
    labelled = _tree(tmp_path / "labelled", {"train/cat": 6, "train/dog": 6, "val/cat": 2, "val/dog": 2})
    unlabelled = _tree(tmp_path / "web", {"a": 3, "a/deeper": 4, "b": 5})
    (unlabelled / "b" / "notes.txt").write_text("not an image")
    train, test = image_folder_refs(str(labelled), 0.2, 0)
    pretrain = image_tree_refs(str(unlabelled), train.classes)
    assert len(pretrain) == 12 and all("web" in p for p in pretrain.reader.paths)
    splits = make_splits(train, test, DataParams(val_size=2, pretrain_size=None, train_size=None), 0, pretrain)
    assert len(splits["pretrain"]) == 12 and len(splits["train"]) == 10 and len(splits["test"]) == 4
    some = make_splits(train, test, DataParams(val_size=2, pretrain_size=5, train_size=None), 0, pretrain)["pretrain"]
    assert len(some) == 5 and list(some.index) == sorted(some.index)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="data.pretrain_root .* holds no images"):
        image_tree_refs(str(tmp_path / "empty"), ["a"])


def _params(tmp_path: Path, **data) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", pretrain_size=None, train_size=None, val_size=2, shard_size=100,
                       image_size=8, channels=3, workers=1, **data)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "p.yaml"


def test_stage_with_imagenet_layout_and_pretrain_root(tmp_path, monkeypatch):
    labelled = _tree(tmp_path / "labelled", {"train/cat": 6, "train/dog": 6, "val/cat": 2, "val/dog": 2})
    unlabelled = _tree(tmp_path / "web", {"x": 7})
    params = _params(tmp_path, root=str(labelled), pretrain_root=str(unlabelled))
    monkeypatch.setattr(sys, "argv", ["shard.py", "--params", str(params), "--out", str(tmp_path / "shards")])
    shard_stage.main()  # in this process: a Python start saved
    m = read_manifest(tmp_path / "shards")
    assert {s: v["count"] for s, v in m["splits"].items()} == {"pretrain": 7, "train": 10, "val": 2, "test": 4}
    assert m["classes"] == ["cat", "dog"] and m["source"]["pretrain_root"] == str(unlabelled)

    (labelled / "cow").mkdir()  # the real script: exit status 2, one line, no traceback
    res = subprocess.run([sys.executable, str(REPO / "stages" / "shard.py"), "--params", str(_params(tmp_path, root=str(labelled))),
                          "--out", str(tmp_path / "shards2")], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr and not (tmp_path / "shards2").exists()
    assert "is ambiguous: split folder(s) ['train', 'val'] beside class folder(s) ['cow']" in res.stderr


def test_store_aspect_keeps_the_photo_and_reads_the_centre_square(tmp_path):
    """data.store_aspect: the shards hold the short side at store_size, aspect kept; the
    readers decode the centre square, the pixels of the default store_size crop."""
    import io
    import tarfile

    from pipeline.modalities.image.codec import SampleFormat, write_image_shards

    from pipeline.shards.read import load_split
    from pipeline.modalities.image.sources import SampleRefs, load_image

    folder = _tree(tmp_path / "d", {"cat": 6, "dog": 6})  # 10x8 photos
    train, test = image_folder_refs(str(folder), 0.2, 0)
    splits = make_splits(train, test, DataParams(val_size=2, pretrain_size=None, train_size=None), 0)
    m = write_image_shards(splits, tmp_path / "s", 100, source={}, fmt=SampleFormat(6, 3, store_size=6, store_aspect=True))
    assert m["store_aspect"] is True and m["image_size"] == 6
    with tarfile.open(tmp_path / "s" / "test-000000.tar") as tar:
        png = tar.extractfile(next(t for t in tar.getmembers() if t.name.endswith(".png"))).read()
    assert Image.open(io.BytesIO(png)).size == (7, 6)  # 10x8 -> short side 6, aspect kept
    x, _ = load_split(tmp_path / "s", "test")
    test_refs: SampleRefs = splits["test"]
    want = np.stack([load_image(test_refs.reader, i, 6, 3, store_size=6) for i in test_refs.index])
    np.testing.assert_array_equal(x.permute(0, 2, 3, 1).numpy(), want)
