import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from pipeline.data import sources
from pipeline.errors import UserError


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
    train, test = sources.fashion_mnist(str(fake_idx_root), 28, 1, download=False)
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
        sources.fashion_mnist(str(tmp_path), 28, 1, download=False)


def test_resize_and_channels(fake_idx_root):
    train, _ = sources.fashion_mnist(str(fake_idx_root), 32, 3, download=False)
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
    train, test = sources.image_folder(str(tmp_path / "imgs"), 28, 3, test_fraction=0.2, seed=0)
    assert train.images.shape[1:] == (28, 28, 3) and len(train) + len(test) == 20
    assert train.classes == ["cat", "dog"] and np.bincount(test.labels).tolist() == [2, 2]
    gray, _ = sources.image_folder(str(tmp_path / "imgs"), 16, 1, test_fraction=0.2, seed=0)
    assert gray.images.shape[1:] == (16, 16, 1)


def test_image_folder_with_train_test_subfolders(tmp_path):
    _make_folder(tmp_path / "d" / "train")
    _make_folder(tmp_path / "d" / "test", n_per_class=2)
    train, test = sources.image_folder(str(tmp_path / "d"), 28, 1, 0.2, 0)
    assert len(train) == 8 and len(test) == 4


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="not a directory"):
        sources.image_folder(str(tmp_path / "missing"), 28, 1, 0.2, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="sub-folder"):
        sources.image_folder(str(tmp_path / "empty"), 28, 1, 0.2, 0)


def test_torchvision_source_offline_with_local_files(fake_idx_root):
    # torchvision's FashionMNIST reads the same IDX files from <root>/FashionMNIST/raw
    raw = fake_idx_root / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in fake_idx_root.glob("*.gz"):
        with gzip.open(f) as src:
            (raw / f.name.removesuffix(".gz")).write_bytes(src.read())
    train, test = sources.torchvision_dataset("FashionMNIST", str(fake_idx_root / "tv"), 28, 1, download=False)
    ours, _ = sources.fashion_mnist(str(fake_idx_root), 28, 1, download=False)
    np.testing.assert_array_equal(train.images, ours.images)
    assert len(test) == 10


def test_torchvision_unknown_name():
    with pytest.raises(UserError, match="no dataset named"):
        sources.torchvision_dataset("NotADataset", "/tmp", 28, 1, download=False)


def test_offline_transfer_sets():
    d = sources.digits(28, 1)
    assert d.images.shape == (1797, 28, 28, 1) and d.images.max() == 255
    m = sources.mnist_sample(28, 3)
    assert m.images.shape == (5000, 28, 28, 3) and sorted(set(m.labels)) == list(range(10))
