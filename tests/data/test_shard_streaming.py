"""The streaming shard writer: sample references, worker processes, bounded memory.

Output bytes must not depend on the number of workers; the default Fashion-MNIST path must
give the same splits and bytes as the array path it replaces; ``data.store_size`` is
torchvision's Resize + CenterCrop; ``data.image_format: jpeg`` stores JPEG samples.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image

from pipeline.config import DataParams
from pipeline.shards import pool as encoding
from pipeline.modalities.image import sources
from pipeline.modalities.image.datasets.fashion_mnist import fashion_mnist, fashion_mnist_refs
from pipeline.modalities.image.datasets.imagefolder import image_folder_refs
from pipeline.modalities.image.codec import SampleFormat, write_image_shards
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split, stream_batches
from pipeline.shards.splits import make_splits
from pipeline.errors import UserError
from tests.data.test_sources import _write_idx

REPO = Path(__file__).resolve().parents[2]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _mixed_folder(root: Path, n_per_class: int = 9) -> Path:
    """Three classes of PNG and JPEG files, RGB, L, RGBA and P, sizes from 17 to 90 px, both orientations."""
    rng = np.random.default_rng(3)
    modes = ["RGB", "L", "RGB", "RGBA", "L", "P"]
    for c, cls in enumerate(["ant", "bee", "cow"]):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            h, w = int(rng.integers(17, 91)), int(rng.integers(17, 91))
            yy, xx = np.mgrid[0:h, 0:w]
            arr = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 60 * c)], -1).astype(np.uint8)
            arr = np.clip(arr.astype(int) + rng.integers(-20, 21, arr.shape), 0, 255).astype(np.uint8)
            img = Image.fromarray(arr).convert(modes[(i + c) % len(modes)])
            ext = "jpg" if img.mode in ("RGB", "L") and i % 2 else "png"
            img.save(root / cls / f"{i:02d}.{ext}")
    return root


def _folder_shards(folder: Path, out: Path, fmt: SampleFormat, workers: int, shard_size: int = 5) -> dict:
    train, test = image_folder_refs(str(folder), test_fraction=0.3, seed=0)
    splits = make_splits(train, test, DataParams(val_size=4, pretrain_size=None, train_size=None), seed=0)
    return write_image_shards(splits, out, shard_size, source={"test": True}, fmt=fmt, workers=workers)


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.mark.parametrize("fmt", [
    SampleFormat(24, 3),  # as before: every image squashed to image_size, PNG
    SampleFormat(24, 1, store_size=20, image_format="jpeg", jpeg_quality=85),
], ids=["png", "jpeg-store_size-gray"])
def test_output_bytes_do_not_depend_on_the_worker_count(tmp_path, monkeypatch, fmt):
    folder = _mixed_folder(tmp_path / "imgs")
    one = _folder_shards(folder, tmp_path / "w1", fmt, workers=1)
    monkeypatch.setattr(encoding, "CHUNK", 2)  # many small tasks, so both workers share every split
    two = _folder_shards(folder, tmp_path / "w2", fmt, workers=2)
    assert one == two
    a, b = _files(tmp_path / "w1"), _files(tmp_path / "w2")
    assert a == b and len(a) > 6  # several shards per split, and the manifest
    assert one["splits"]["pretrain"]["count"] > 2 * encoding.CHUNK * 2


def _shard_stage(tmp_path: Path, name: str, **data) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(data)
    params = tmp_path / f"{name}.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = tmp_path / name
    res = subprocess.run([sys.executable, str(REPO / "stages" / "shard.py"), "--params", str(params), "--out", str(out)],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


def test_stage_output_identical_for_one_and_two_workers(tmp_path):
    """The stage end to end: data.workers is not recorded in the manifest, nothing else differs."""
    folder = _mixed_folder(tmp_path / "imgs")
    common = dict(source="imagefolder", root=str(folder), pretrain_size=None, train_size=None, val_size=3,
                  test_fraction=0.3, shard_size=4, image_size=16, channels=3)
    one = _shard_stage(tmp_path, "w1", workers=1, **common)
    two = _shard_stage(tmp_path, "w2", workers=2, **common)
    assert _files(one) == _files(two)
    manifest = read_manifest(one)
    assert "workers" not in manifest["source"] and "image_format" not in manifest
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["val"]["count"] + manifest["splits"]["test"]["count"] == 27
    images, labels = load_split(one, "test")
    assert images.shape[1:] == (3, 16, 16) and set(labels.tolist()) == {0, 1, 2}


# --- store_size: short side to store_size, centre crop ---------------------------------------


@pytest.mark.parametrize("size", [(50, 31), (31, 50), (33, 33), (75, 20), (21, 64), (12, 9), (19, 16), (16, 23)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_store_size_is_torchvision_resize_then_center_crop(size, mode):
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    arr = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    ours = sources.load_image(sources.ArrayReader([img]), 0, 28, 1 if mode == "L" else 3, store_size=16)
    ref = np.asarray(F.center_crop(F.resize(img, 16, interpolation=InterpolationMode.BICUBIC), 16))
    assert ours.shape == (16, 16, 1 if mode == "L" else 3)
    np.testing.assert_array_equal(ours.reshape(ref.shape), ref)


def test_store_size_keeps_the_centre_without_distortion():
    # 60x20 image: a 20x20 white square in the middle of black; at store_size 20 nothing is
    # resized, the crop is exactly the square. At 10: a resized square, all bright.
    arr = np.zeros((20, 60), np.uint8)
    arr[:, 20:40] = 255
    reader = sources.ArrayReader([Image.fromarray(arr)])
    assert (sources.load_image(reader, 0, 28, 1, store_size=20) == 255).all()
    half = sources.load_image(reader, 0, 28, 1, store_size=10)
    assert half.shape == (10, 10, 1) and half[:, 1:-1].min() > 240
    # without store_size the image is squashed to image_size, black bands included (as before)
    squashed = sources.load_image(reader, 0, 12, 1)
    assert squashed.shape == (12, 12, 1) and squashed[:, 0].max() < 20 and squashed[:, 6].min() > 240


def test_store_size_shards_read_at_the_stored_size(tmp_path):
    folder = _mixed_folder(tmp_path / "imgs")
    manifest = _folder_shards(folder, tmp_path / "s", SampleFormat(28, 3, store_size=18), workers=1)
    assert manifest["image_size"] == 18
    images, _ = load_split(tmp_path / "s", "train")
    assert images.shape[1:] == (3, 18, 18)
    x, _ = next(stream_batches(tmp_path / "s", "pretrain", 4, 8, seed=0))
    assert x.shape == (4, 3, 18, 18)


# --- JPEG ----------------------------------------------------------------------------------


def _tar_samples(path: Path) -> list[dict]:
    return list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))


def test_jpeg_option(tmp_path):
    folder = _mixed_folder(tmp_path / "imgs")
    png = _folder_shards(folder, tmp_path / "png", SampleFormat(32, 3), workers=1)
    jpg = _folder_shards(folder, tmp_path / "jpg", SampleFormat(32, 3, image_format="jpeg", jpeg_quality=95), workers=1)
    low = _folder_shards(folder, tmp_path / "low", SampleFormat(32, 3, image_format="jpeg", jpeg_quality=30), workers=1)
    assert "image_format" not in png and jpg["image_format"] == low["image_format"] == "jpeg"
    assert {k: v["count"] for k, v in jpg["splits"].items()} == {k: v["count"] for k, v in png["splits"].items()}
    name = "train-000000.tar"
    a, b, c = (_tar_samples(tmp_path / d / name) for d in ("png", "jpg", "low"))
    assert all("png" in s and "jpg" not in s for s in a)
    assert all("jpg" in s and "png" not in s and s["jpg"][:3] == b"\xff\xd8\xff" for s in b)
    assert [s["cls"] for s in a] == [s["cls"] for s in b]
    for sp, sj, sl in zip(a, b, c):
        ref = np.asarray(Image.open(io.BytesIO(sp["png"])), dtype=np.float64)
        dec = np.asarray(Image.open(io.BytesIO(sj["jpg"])).convert("RGB"), dtype=np.float64)
        assert dec.shape == ref.shape == (32, 32, 3) and np.abs(dec - ref).mean() < 6  # quality 95: close
        assert len(sl["jpg"]) < len(sj["jpg"])  # quality 30: smaller
    # the stats are those of the stored pixels before JPEG encoding: the PNG run's
    assert jpg["mean"] == png["mean"] and jpg["std"] == png["std"]
    # the readers decode the jpg samples: the split's images as stored, close to the PNG run's
    from pipeline.shards.read import load_split

    x_png, y_png = load_split(tmp_path / "png", "train")
    x_jpg, y_jpg = load_split(tmp_path / "jpg", "train")
    assert torch.equal(y_png, y_jpg) and x_jpg.shape == x_png.shape
    assert (x_jpg.double() - x_png.double()).abs().mean() < 6


# --- the default Fashion-MNIST path ---------------------------------------------------------


@pytest.fixture
def fake_idx_root(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 60)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)) // rng.integers(1, 4, (n, 1, 1)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", rng.permutation(np.arange(n) % 10))
    return tmp_path


@pytest.mark.parametrize("size,channels", [(28, 1), (20, 3)])
def test_fashion_mnist_refs_write_the_same_bytes_as_the_array_path(fake_idx_root, tmp_path, size, channels):
    params = DataParams(root=str(fake_idx_root), image_size=size, channels=channels, val_size=50, pretrain_size=200,
                        train_size=120, shard_size=70)
    train, test = fashion_mnist(str(fake_idx_root), size, channels, download=False)  # arrays, as before
    old = write_image_shards(make_splits(train, test, params, seed=3), tmp_path / "old", 70, source={"x": 1})
    train_r, test_r = fashion_mnist_refs(str(fake_idx_root), download=False)
    new = write_image_shards(make_splits(train_r, test_r, params, seed=3), tmp_path / "new", 70, source={"x": 1},
                       fmt=SampleFormat(size, channels), workers=2)
    assert new == old and _files(tmp_path / "new") == _files(tmp_path / "old")
    assert {k: v["count"] for k, v in new["splits"].items()} == {"pretrain": 200, "train": 120, "val": 50, "test": 60}


def test_stats_match_numpy_float64(fake_idx_root, tmp_path):
    """The exact integer sums give the mean/std the float64 copy of the pretrain split gave."""
    train, test = fashion_mnist(str(fake_idx_root), 28, 1, download=False)
    splits = make_splits(train, test, DataParams(val_size=50, pretrain_size=None, train_size=None), seed=0)
    m = write_image_shards(splits, tmp_path, 1000, source={})
    pre = splits["pretrain"].images.astype(np.float64) / 255.0
    assert m["mean"] == [round(float(x), 6) for x in pre.mean(axis=(0, 1, 2))]
    assert m["std"] == [round(float(x), 6) for x in pre.std(axis=(0, 1, 2))]


@pytest.mark.skipif(not FMNIST.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_default_splits_are_the_same_images():
    params = DataParams()  # the defaults: params.yaml's data section
    train_r, test_r = fashion_mnist_refs(str(FMNIST), download=False)
    refs = make_splits(train_r, test_r, params, seed=0)
    assert {k: len(v) for k, v in refs.items()} == {"pretrain": 20000, "train": 10000, "val": 5000, "test": 10000}
    train_a, test_a = fashion_mnist(str(FMNIST), 28, 1, download=False)
    arrays = make_splits(train_a, test_a, params, seed=0)
    for name in refs:
        np.testing.assert_array_equal(refs[name].labels, arrays[name].labels)
    val = refs["val"]
    got = np.stack([sources.load_image(val.reader, i, 28, 1) for i in val.index])
    np.testing.assert_array_equal(got, arrays["val"].images)


@pytest.mark.skipif(not (REPO / "data" / "shards" / "manifest.json").is_file(), reason="no data/shards (dvc pull)")
def test_default_stage_manifest_matches_the_tracked_one(tmp_path):
    """The shard stage on the default params reproduces data/shards/manifest.json (the
    sha256 of every shard included) when it came from the same params."""
    import importlib.util

    from pipeline.config import load_params

    spec = importlib.util.spec_from_file_location("shard_stage", REPO / "stages" / "shard.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    tracked = json.loads((REPO / "data" / "shards" / "manifest.json").read_text())
    if tracked["source"] != stage.manifest_source(load_params(REPO / "params.yaml").data) or not FMNIST.is_dir():
        pytest.skip("data/shards was made from other params or the dataset is missing")
    out = _shard_stage(tmp_path, "default")
    assert (out / "manifest.json").read_text() == (REPO / "data" / "shards" / "manifest.json").read_text()


# --- bounded memory, errors -----------------------------------------------------------------


class _FakeResult:
    def __init__(self, value, log):
        self.value, self.log = value, log

    def get(self):
        self.log.append("get")
        return self.value


class _FakePool:
    def __init__(self):
        self.log = []

    def apply_async(self, fn, args):
        self.log.append("submit")
        return _FakeResult(encoding._encode_task(*args), self.log)


def test_tasks_in_flight_are_bounded():
    reader = sources.ArrayReader(np.zeros((1000, 8, 8, 1), np.uint8))
    encoding._init_worker([reader], SampleFormat(8, 1))
    tasks = [(0, np.arange(i, i + 10), False) for i in range(0, 1000, 10)]
    pool = _FakePool()
    consumed, peak = 0, 0
    for _ in encoding.encoded(tasks, [reader], SampleFormat(8, 1), pool, window=3):
        consumed += 1
        submitted = pool.log.count("submit")
        peak = max(peak, submitted * 10 - consumed)  # samples encoded or queued, not yet consumed
    assert consumed == 1000 and pool.log.count("submit") == 100
    assert peak <= 3 * 10


def test_unreadable_image_in_a_worker_names_the_file(tmp_path):
    folder = _mixed_folder(tmp_path / "imgs")
    (folder / "bee" / "zz.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"cannot read image .*bee/zz.png: .*remove or replace the file"):
        _folder_shards(folder, tmp_path / "out", SampleFormat(16, 3), workers=2)
