"""A crafted or mismatched ``encoder.pt`` (issue 29): refused by ``load_encoder`` with one line,
and, through the evaluate stage's CLI, before any work (exit 2, no traceback, no metrics)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import DataParams, EncoderParams
from pipeline.modalities.image.codec import write_image_shards
from pipeline.shards.manifest import read_manifest
from pipeline.modalities.image.sources import ImageSet
from pipeline.shards.splits import make_splits
from pipeline.errors import UserError
from pipeline.modalities.encoders import build_encoder, load_encoder, save_encoder

REPO = Path(__file__).resolve().parents[1]
TEXT = {"modality": "text", "vocab_size": 64, "max_length": 16}


@pytest.fixture(scope="module")
def encoder_blob(tiny_shards) -> dict:
    """What ``save_encoder`` writes for a small ResNet on ``tiny_shards`` (1 channel, 28 x 28)."""
    enc = build_encoder(EncoderParams(layers=[1], width=8), read_manifest(tiny_shards))
    return {"params": enc.params.model_dump(exclude={"causal"}), "channels": 1, "mean": enc.mean.flatten().tolist(),
            "std": enc.std.flatten().tolist(), "image_size": 28, "state_dict": enc.state_dict()}


@pytest.fixture(scope="module")
def rgb_shards(fmnist_small, tmp_path_factory) -> Path:
    """``tiny_shards``' images as 3-channel images: another dataset of the same size."""
    train, test = fmnist_small
    rgb = lambda s: ImageSet(np.repeat(s.images, 3, axis=3), s.labels, s.classes)  # noqa: E731
    splits = make_splits(rgb(train), rgb(test), DataParams(val_size=200, shard_size=150, pretrain_size=None, train_size=None), 0)
    out = tmp_path_factory.mktemp("rgb_shards")
    write_image_shards(splits, out, 150, source={"test": True})
    return out


def _evaluate(tmp_path: Path, encoder: Path, shards: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), "knn", "--params", str(REPO / "params.yaml"),
                           "--encoder", str(encoder),
                           "--shards", str(shards), "--metrics", str(tmp_path / "m.json"), "--details", str(tmp_path / "d.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


# Through the CLI: the crafted file and the other dataset (the two reports of the issue); the
# rest of the checks are the same call (``load_encoder`` before any work), tested below in-process.
@pytest.mark.parametrize("case", ["pickled_list", "three_channel_shards"])
def test_evaluate_refuses_a_crafted_or_mismatched_encoder(case, tmp_path, tiny_shards, rgb_shards, encoder_blob):
    path, shards = tmp_path / "encoder.pt", tiny_shards
    if case == "pickled_list":
        torch.save([1, 2, 3], path)
        message = f"error: encoder {path} holds a list, not an encoder the pretrain stage saved; re-run pretraining"
    else:
        torch.save(encoder_blob, path)
        shards = rgb_shards
        message = (f"error: encoder {path} takes 1-channel images but {shards} holds 3-channel images; evaluate it on the "
                   "shards it was pretrained on")
    res = _evaluate(tmp_path, path, shards)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith(message) and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.pt"]  # no metrics, details, nor their temporaries


def _refused(tmp_path, blob, manifest, message: str) -> None:
    torch.save(blob, tmp_path / "e.pt")
    with pytest.raises(UserError, match=message):
        load_encoder(tmp_path / "e.pt", manifest, "S")


def test_other_mismatches_are_refused_by_load_encoder(tmp_path, tiny_shards, encoder_blob):
    """No state_dict, a text encoder on image shards, image size, normalisation (another
    dataset), weights of another shape, a text vocabulary."""
    manifest = read_manifest(tiny_shards)
    _refused(tmp_path, {k: v for k, v in encoder_blob.items() if k != "state_dict"}, manifest,
             "has no 'state_dict'; re-run pretraining")
    _refused(tmp_path, {"modality": "text", "params": {}, "vocab_size": 64, "max_length": 16, "state_dict": {}}, manifest,
             "encodes text but S holds image; evaluate it on the shards it was pretrained on")
    _refused(tmp_path, encoder_blob, manifest | {"image_size": 32}, "was trained on 28x28 images but S holds 32x32")
    _refused(tmp_path, encoder_blob, manifest | {"mean": [0.13]}, r"normalises with mean \[0\.29\d*\] but the images of S have mean \[0.13\]")
    _refused(tmp_path, encoder_blob | {"params": encoder_blob["params"] | {"width": 16}}, manifest,
             "does not match the architecture it names")
    text = build_encoder(EncoderParams(arch="transformer", dim=16, depth=1, heads=2), TEXT)
    save_encoder(text, tmp_path / "t.pt")
    with pytest.raises(UserError, match="has a 64-token vocabulary but the tokenizer of S has 80"):
        load_encoder(tmp_path / "t.pt", TEXT | {"vocab_size": 80}, "S")
    assert load_encoder(tmp_path / "t.pt", TEXT, "S").vocab_size == 64  # the matching shards load it


def test_the_encoder_fits_the_shards_it_was_pretrained_on(tmp_path, tiny_shards, encoder_blob):
    """The check passes an encoder on its own shards, whose statistics it stores as float32."""
    torch.save(encoder_blob, tmp_path / "e.pt")
    enc = load_encoder(tmp_path / "e.pt", read_manifest(tiny_shards), tiny_shards)
    assert enc.channels == 1 and not enc.training
