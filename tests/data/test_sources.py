import gzip
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.modalities.image.datasets.fashion_mnist import fashion_mnist
from pipeline.modalities.image.datasets.imagefolder import image_folder
from pipeline.modalities.image.datasets.torchvision_datasets import torchvision_dataset
from pipeline.modalities.image.datasets.transfer import digits, mnist_sample
from pipeline.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fake_idx_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_idx_files_read_exactly(fake_idx_root):
    train, test = fashion_mnist(str(fake_idx_root), 28, 1, download=False)
    assert train.images.shape == (30, 28, 28, 1) and test.images.shape == (10, 28, 28, 1)
    with gzip.open(fake_idx_root / "train-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read()[16:], np.uint8).reshape(30, 28, 28)
    np.testing.assert_array_equal(train.images[..., 0], raw)
    assert list(train.labels[:12]) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]


def test_real_fashion_mnist(fmnist):
    train, test = fmnist
    assert len(train) == 60000 and len(test) == 10000
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_missing_idx_files_say_how_to_fix(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(str(tmp_path), 28, 1, download=False)


def test_resize_and_channels(fake_idx_root):
    train, _ = fashion_mnist(str(fake_idx_root), 32, 3, download=False)
    assert train.images.shape == (30, 32, 32, 3) and train.images.dtype == np.uint8


def _make_folder(root, n_per_class=4):
    """Classes with every mode and format the issue lists, and odd sizes."""
    rng = np.random.default_rng(1)
    modes = ["RGB", "L", "RGBA", "P"]
    for c, cls in enumerate(["cat", "dog"]):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 256, (20 + i, 31, 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert(modes[i % 4])
            ext = "jpg" if img.mode in ("RGB", "L") and i % 2 else "png"
            img.save(root / cls / f"{i}.{ext}")


def test_image_folder_any_mode_and_size(tmp_path):
    _make_folder(tmp_path / "imgs", n_per_class=10)
    train, test = image_folder(str(tmp_path / "imgs"), 28, 3, test_fraction=0.2, seed=0)
    assert train.images.shape[1:] == (28, 28, 3) and len(train) + len(test) == 20
    assert train.classes == ["cat", "dog"] and np.bincount(test.labels).tolist() == [2, 2]
    gray, _ = image_folder(str(tmp_path / "imgs"), 16, 1, test_fraction=0.2, seed=0)
    assert gray.images.shape[1:] == (16, 16, 1)


def test_image_folder_with_train_test_subfolders(tmp_path):
    _make_folder(tmp_path / "d" / "train")
    _make_folder(tmp_path / "d" / "test", n_per_class=2)
    train, test = image_folder(str(tmp_path / "d"), 28, 1, 0.2, 0)
    assert len(train) == 8 and len(test) == 4


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        image_folder(str(tmp_path / "missing"), 28, 1, 0.2, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="sub-folder"):
        image_folder(str(tmp_path / "empty"), 28, 1, 0.2, 0)


def test_torchvision_source_offline_with_local_files(fake_idx_root):
    # torchvision's FashionMNIST reads the same IDX files from <root>/FashionMNIST/raw
    raw = fake_idx_root / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fake_idx_root.glob("*.gz"):
        with gzip.open(f) as src:
            (raw / f.name.removesuffix(".gz")).write_bytes(src.read())
    train, test = torchvision_dataset("FashionMNIST", str(fake_idx_root / "tv"), 28, 1, download=False)
    ours, _ = fashion_mnist(str(fake_idx_root), 28, 1, download=False)
    np.testing.assert_array_equal(train.images, ours.images)
    assert len(test) == 10


def test_torchvision_unknown_name():
    with pytest.raises(UserError, match="no dataset named"):
        torchvision_dataset("NotADataset", "/tmp", 28, 1, download=False)


def test_offline_transfer_sets():
    d = digits(28, 1)
    assert d.images.shape == (1797, 28, 28, 1) and d.images.max() == 255
    m = mnist_sample(28, 3)
    assert m.images.shape == (5000, 28, 28, 3) and sorted(set(m.labels)) == list(range(10))


def test_stray_non_image_files_are_skipped_with_a_warning(tmp_path, capsys):
    _make_folder(tmp_path / "imgs", n_per_class=5)
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "dog" / ".DS_Store").write_bytes(b"\0\1")
    train, test = image_folder(str(tmp_path / "imgs"), 28, 1, test_fraction=0.2, seed=0)
    assert len(train) + len(test) == 10
    assert train.skipped == test.skipped == ("cat/notes.txt", "dog/.DS_Store")
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "warning: skipped 2 non-image file(s)" in err and "cat/notes.txt, dog/.DS_Store" in err


def test_stray_files_with_train_test_subfolders_keep_their_folder(tmp_path, capsys):
    _make_folder(tmp_path / "d" / "train")
    _make_folder(tmp_path / "d" / "test", n_per_class=2)
    (tmp_path / "d" / "test" / "dog" / "readme.md").write_text("x")
    train, test = image_folder(str(tmp_path / "d"), 28, 1, 0.2, 0)
    assert train.skipped == () and test.skipped == ("test/dog/readme.md",)
    assert "skipped 1 non-image file(s)" in capsys.readouterr().err


def test_no_warning_without_stray_files(tmp_path, capsys):
    _make_folder(tmp_path / "imgs", n_per_class=5)
    train, _ = image_folder(str(tmp_path / "imgs"), 28, 1, 0.2, 0)
    assert train.skipped == () and capsys.readouterr().err == ""


def test_unreadable_image_is_named(tmp_path):
    _make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read image .*dog/broken.png: .*remove or replace the file"):
        image_folder(str(tmp_path / "imgs"), 28, 1, 0.2, 0)


def test_one_class_folder_is_refused(tmp_path):
    _make_folder(tmp_path / "imgs")
    shutil.rmtree(tmp_path / "imgs" / "dog")
    with pytest.raises(UserError, match=rf"ImageFolder {tmp_path}/imgs needs at least two classes but has 1 \(\['cat'\]\)"):
        image_folder(str(tmp_path / "imgs"), 28, 1, 0.2, 0)


@pytest.mark.parametrize("leftover", [None, "notes.txt"])
def test_empty_class_folder_is_named(tmp_path, leftover):
    _make_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "bird").mkdir()
    if leftover:  # a folder holding only non-images is empty too
        (tmp_path / "imgs" / "bird" / leftover).write_text("x")
    with pytest.raises(UserError, match=rf"class folder\(s\) {tmp_path}/imgs/bird hold no images \(.jpg .*add images or remove"):
        image_folder(str(tmp_path / "imgs"), 28, 1, 0.2, 0)


def test_too_few_images_to_stratify_names_the_key(tmp_path):
    _make_folder(tmp_path / "imgs", n_per_class=4)
    for f in sorted((tmp_path / "imgs" / "dog").iterdir())[1:]:
        f.unlink()  # one dog left: it cannot be in both train and test
    with pytest.raises(UserError, match=r"per class: \{'cat': 4, 'dog': 1\}.*data.test_fraction"):
        image_folder(str(tmp_path / "imgs"), 28, 1, 0.2, 0)


# The shard stage end to end on ImageFolders: exit 2 with one clear line, or exit 0 with a warning.


def _shard_stage(tmp_path, root):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(root), pretrain_size=None, train_size=None, val_size=2,
                       test_fraction=0.3, shard_size=8)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = tmp_path / "shards"
    res = subprocess.run([sys.executable, str(REPO / "stages" / "shard.py"), "--params", str(params), "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True)
    return res, out


def _assert_refused(res, out, message):
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and message in res.stderr and "Traceback" not in res.stderr
    assert not (out / "manifest.json").exists()


def test_shard_stage_refuses_one_class(tmp_path):
    _make_folder(tmp_path / "imgs", n_per_class=6)
    shutil.rmtree(tmp_path / "imgs" / "dog")
    res, out = _shard_stage(tmp_path, tmp_path / "imgs")
    _assert_refused(res, out, f"ImageFolder {tmp_path}/imgs needs at least two classes")


def test_shard_stage_names_empty_class_folder(tmp_path):
    _make_folder(tmp_path / "imgs", n_per_class=6)
    (tmp_path / "imgs" / "bird").mkdir()
    res, out = _shard_stage(tmp_path, tmp_path / "imgs")
    _assert_refused(res, out, f"class folder(s) {tmp_path}/imgs/bird hold no images")


def test_shard_stage_warns_about_and_records_stray_files(tmp_path):
    _make_folder(tmp_path / "imgs", n_per_class=6)
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("x")
    res, out = _shard_stage(tmp_path, tmp_path / "imgs")
    assert res.returncode == 0, res.stderr
    assert "warning: skipped 1 non-image file(s)" in res.stderr and "cat/notes.txt" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped_files"] == {"count": 1, "examples": ["cat/notes.txt"]}
    assert sum(v["count"] for k, v in manifest["splits"].items() if k in ("train", "val", "test")) == 12
