"""Per-example test predictions: each recorded headline's accuracy is recomputable from them,
the review's McNemar test pairs head and base on them. The evaluate stage writing them, under
torchrun with 2 processes: tests/dist/test_eval_ddp.py."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import EncoderParams, parse_params
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split
from pipeline.eval import predictions
from pipeline.eval.protocol import EvalContext
from pipeline.eval.run import run_protocol
from pipeline.modalities.encoders import build_encoder
from pipeline.registry import PROTOCOLS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_params():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["finetune"].update(epochs=1, batch_size=64)
    raw["linear_eval"].update(sgd_epochs=1, c_grid=[0.1])
    raw["knn"].update(ks=[5, 20])
    return parse_params(raw)


@pytest.mark.parametrize("protocol, keys", [
    ("knn", ["knn5_top1", "knn20_top1"]),
    ("linear_eval", ["linear_top1", "linear_sgd_top1"]),
    ("finetune", ["top1"]),
])
def test_recorded_predictions_reproduce_the_headline(tiny_shards, small_params, protocol, keys):
    torch.manual_seed(0)
    enc = build_encoder(EncoderParams(width=8, layers=[1, 1]), read_manifest(tiny_shards))
    ctx = EvalContext("enc", enc, True, str(tiny_shards), read_manifest(tiny_shards), small_params, torch.device("cpu"))
    headline, details = run_protocol(PROTOCOLS.get(protocol), ctx)
    labels = load_split(str(tiny_shards), "test")[1].numpy()
    assert sorted(ctx.predictions["predictions"]) == sorted(keys)
    assert np.array_equal(ctx.predictions["labels"], labels)  # the whole test split, in shard order
    for key in keys:
        assert headline[key] == pytest.approx(float((ctx.predictions["predictions"][key] == labels).mean()), abs=1e-7)
    assert "test_predictions" not in json.dumps(details)  # the arrays stay out of the details file
    doc = json.loads(predictions.to_bytes(ctx.predictions))
    assert len(doc["labels"]) == len(labels) and set(doc["predictions"]) == set(keys)
    assert predictions.path_for("metrics/knn/simclr.json") == Path("metrics/knn/simclr.predictions.json")


def test_record_refuses_predictions_on_other_examples():
    store = {}
    predictions.record(store, "a", [1, 2], [1, 1])
    with pytest.raises(ValueError, match="other test examples"):
        predictions.record(store, "b", [1, 2], [0, 1])
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        predictions.record(store, "c", [1, 2], [1, 1, 1])
