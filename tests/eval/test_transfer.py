"""Transfer datasets: the offline ones for real, the networked presets through torchvision's
own readers on local fakes written in torchvision's on-disk format (no network here)."""

import hashlib
import pickle

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.modalities.image.datasets.transfer import TORCHVISION_PRESETS, load_transfer


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    """cifar-10-batches-py with 5 train batches of 20 and a test batch of 20 random 32x32 RGB images."""
    import torchvision.datasets as tvd

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), "labels": list(np.arange(20) % 10)}
        (folder / name).write_bytes(pickle.dumps(entry))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}))
    # torchvision verifies md5 sums of the real files; point it at the fakes' sums instead
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[n, _md5(folder / n)] for n in names[:5]])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": _md5(folder / "batches.meta")})
    return tmp_path


def test_cifar10_preset_reads_torchvision_format(fake_cifar10):
    sets = load_transfer("cifar10", 28, 1, str(fake_cifar10), test_fraction=0.3, val_fraction=0.2, seed=0)
    assert sets["train"].images.shape[1:] == (28, 28, 1) and sets["test"].images.shape == (20, 28, 28, 1)
    assert len(sets["train"]) + len(sets["val"]) == 100
    assert sets["train"].classes[0] == "airplane"


def test_presets_cover_the_issue():
    assert set(TORCHVISION_PRESETS) == {"cifar10", "cifar100", "stl10", "food101"}


def test_offline_sets_split_train_val_test():
    sets = load_transfer("digits", 28, 1, "unused", test_fraction=0.3, val_fraction=0.2, seed=0)
    n = sum(len(s) for s in sets.values())
    assert n == 1797 and len(sets["test"]) == 540


def test_unknown_transfer_dataset():
    with pytest.raises(UserError, match="valid: digits"):
        load_transfer("imagenet", 28, 1, "x", 0.3, 0.2, 0)
