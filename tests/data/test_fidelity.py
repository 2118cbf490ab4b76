"""The shard stage warns when the stored size or channels throw the photos' information away."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.modalities.image.fidelity import information_loss
from pipeline.modalities.image.sources import ArrayReader, SampleRefs
from pipeline.presets import PRESETS

REPO = Path(__file__).resolve().parents[2]


def _refs(images: np.ndarray) -> SampleRefs:
    n = len(images)
    return SampleRefs(ArrayReader(images), np.arange(n), np.zeros(n, dtype=np.int64), ["a"])


def _photos(n=4, side=160, colour=True, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return x if colour else np.repeat(x[..., :1], 3, axis=-1)  # grey stored as RGB: nothing lost


@pytest.mark.parametrize("images, size, channels, store, expect", [
    (_photos(), 28, 1, None, ["colour", "median short side of 160"]),  # the defaults on photos
    (_photos(), 64, 3, None, []),                                       # presets/photos.yaml
    (_photos(colour=False), 64, 1, None, []),                           # grey photos stored grey
    (_photos(), 28, 3, 40, ["data.store_size"]),                        # stored at 40 px: 4x smaller
    (_photos(side=28)[..., 0], 28, 1, None, []),                        # Fashion-MNIST-like: 28x28 grey
])
def test_information_loss(images, size, channels, store, expect):
    warnings = " ".join(information_loss(_refs(images), size, channels, store))
    for phrase in expect:
        assert phrase in warnings
    if not expect:
        assert warnings == ""


def test_photos_preset_keeps_colour_and_detail():
    preset = yaml.safe_load((PRESETS / "photos.yaml").read_text())["data"]
    assert preset["channels"] == 3 and preset["image_size"] >= 64
    assert information_loss(_refs(_photos(side=preset["image_size"] * 2)), preset["image_size"], 3, None) == []


def test_shard_stage_warns_on_colour_photos_stored_small_and_grey(tmp_path):
    """The defaults (28 px, one channel) on an unlabelled tree of 128 px colour photos beside a
    labelled folder of small grey images: the warning comes from the photos that make the pretrain split."""
    labelled, photos = tmp_path / "labelled", tmp_path / "photos" / "2024" / "trip"
    for c, cls in enumerate(["cat", "dog"]):
        (labelled / cls).mkdir(parents=True)
        for i, img in enumerate(_photos(n=5, side=28, colour=False, seed=c)):
            Image.fromarray(img[..., 0]).save(labelled / cls / f"{i}.png")
    photos.mkdir(parents=True)
    for i, img in enumerate(_photos(n=6, side=128, seed=2)):
        Image.fromarray(img).save(photos / f"{i}.jpg")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())  # the defaults: 28 px, 1 channel
    raw["data"].update(source="imagefolder", root=str(labelled), pretrain_root=str(tmp_path / "photos"), pretrain_size=None,
                       train_size=None, val_size=2, test_fraction=0.3, shard_size=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = subprocess.run([sys.executable, str(REPO / "stages" / "shard.py"), "--params", "params.yaml", "--out", "shards"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "6 of 6 sampled images are in colour but data.channels is 1" in res.stderr
    assert "median short side of 128 px but are stored at 28x28 px" in res.stderr
    assert (tmp_path / "shards" / "manifest.json").is_file()
