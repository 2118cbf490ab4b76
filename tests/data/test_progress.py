"""Progress bars on the long loops (sharding, feature extraction) when stderr is a terminal, and
nothing in logs (DVC, CI) where it is not."""

import io
import sys

import numpy as np
import pytest
import torch

from pipeline.config import parse_params
from pipeline.modalities.image.codec import write_image_shards
from pipeline.shards.manifest import read_manifest
from pipeline.modalities.image.sources import ImageSet
from pipeline.eval.baselines import baseline_featurizer
from pipeline.eval.protocol import EvalContext


class _Stderr(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _splits():
    rng = np.random.default_rng(0)
    make = lambda n: ImageSet(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), rng.integers(0, 2, n), ["a", "b"])  # noqa: E731
    return {"pretrain": make(20), "train": make(10), "val": make(6), "test": make(6)}


@pytest.mark.parametrize("tty", [True, False])
def test_shard_bar_only_on_a_terminal(tmp_path, monkeypatch, tty):
    err = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    write_image_shards(_splits(), tmp_path / "s", 8, source={"test": True})
    shown = err.getvalue()
    assert ("shard: 100%" in shown and "42/42" in shown) if tty else shown == ""


@pytest.mark.parametrize("tty", [True, False])
def test_feature_bar_only_on_a_terminal(tiny_shards, default_params_dict, monkeypatch, tty):
    params = parse_params(default_params_dict)
    ctx = EvalContext("raw_pixels", None, False, str(tiny_shards), read_manifest(tiny_shards), params, torch.device("cpu"),
                      featurizer=baseline_featurizer(params, "raw_pixels", str(tiny_shards)))
    err = _Stderr(tty)
    monkeypatch.setattr(sys, "stderr", err)
    feats, labels = ctx.features("test")
    assert len(feats) == len(labels) == 300
    assert ("features raw_pixels test" in err.getvalue()) if tty else err.getvalue() == ""
