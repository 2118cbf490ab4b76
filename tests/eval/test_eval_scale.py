"""Evaluations that scale (issue 26, item 5): the feature cache, kNN from one top-k search,
the torch linear probe against scikit-learn's, the raw-pixel budget, few-shot's class cap,
and the stage refusing sizes it cannot finish (a real stage process, exit 2)."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import EncoderParams, parse_params
from pipeline.modalities.image.views import to_float
from pipeline.shards.manifest import read_manifest
from pipeline.registry import PROTOCOLS
from pipeline.eval.feature_cache import cache_key, cached_features
from pipeline.modalities.image.baseline import PIXEL_BUDGET, pixel_dim, pixel_features
from pipeline.eval.algorithms.knn import knn_accuracies, knn_accuracy, knn_topk
from pipeline.eval.algorithms.linear import linear_probe
from pipeline.eval.protocol import EvalContext
from pipeline.modalities.encoders import build_encoder
from tests.conftest import REPO, random_images

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(shards, seed=0):
    torch.manual_seed(seed)
    return build_encoder(EncoderParams(width=8, layers=[1, 1]), read_manifest(shards))


def _ctx(shards, params, encoder, cache):
    return EvalContext("enc", encoder, True, str(shards), read_manifest(shards), params, CPU, feature_cache=cache)


def test_feature_cache_extracts_once_and_reads_back_the_same_features(tiny_shards, params, tmp_path):
    enc = _encoder(tiny_shards)
    plain = _ctx(tiny_shards, params, enc, None).features("test")
    first = _ctx(tiny_shards, params, enc, tmp_path)
    cached = first.features("test")
    assert isinstance(cached[0], np.memmap) and cached[0].dtype == np.float32  # the CPU's dtype: the default unchanged
    np.testing.assert_array_equal(cached[0], plain[0])
    np.testing.assert_array_equal(cached[1], plain[1])
    # a second stage (a new context) reads the entry and never runs the encoder
    second = _ctx(tiny_shards, params, enc, tmp_path)
    second.featurize = lambda x: pytest.fail("features were recomputed despite the cache")
    np.testing.assert_array_equal(second.features("test")[0], plain[0])
    # other weights are another entry: a retrained encoder never reads a stale one
    other = _ctx(tiny_shards, params, _encoder(tiny_shards, seed=1), tmp_path)
    assert not np.array_equal(other.features("test")[0], plain[0])
    assert len(list(tmp_path.glob("*.features.npy"))) == 2 and not list(tmp_path.glob("*tmp*"))


def test_feature_cache_float16_and_no_entry_after_a_failed_extraction(tiny_shards, tmp_path):
    manifest = read_manifest(tiny_shards)
    x = torch.randn(10, 4)
    batches = lambda: iter([(x[:6], torch.arange(6)), (x[6:], torch.arange(4))])  # noqa: E731
    key = cache_key("test", manifest, "test", np.float16)
    feats, labels = cached_features(tmp_path, key, batches, lambda b: b.numpy(), 10, np.float16)
    assert feats.dtype == np.float16 and feats.shape == (10, 4)
    np.testing.assert_allclose(feats, x.numpy(), rtol=1e-3, atol=1e-3)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    with pytest.raises(RuntimeError, match="streamed 10"):  # the manifest says 11: nothing is kept
        cached_features(tmp_path / "bad", key, batches, lambda b: b.numpy(), 11, np.float16)
    assert not list((tmp_path / "bad").iterdir())


def test_encoder_id_tells_apart_encoders_of_equal_weights_and_other_architecture():
    """A causal and a bidirectional Transformer of one seed share every weight; their cached
    features must not (the text pipeline's random_init and random_init_clm baselines)."""
    from pipeline.eval.feature_cache import encoder_id

    manifest = {"modality": "text", "vocab_size": 50, "max_length": 8}
    encoders = []
    for causal in (False, True):
        torch.manual_seed(0)
        encoders.append(build_encoder(EncoderParams(arch="transformer", dim=16, depth=1, heads=2, causal=causal), manifest))
    a, b = encoders
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert encoder_id(a) != encoder_id(b)
    assert encoder_id(a) == encoder_id(copy.deepcopy(a))


def test_knn_one_search_at_the_largest_k_matches_a_search_per_k():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(50, 16)).astype(np.float32)
    bank_labels, query_labels = rng.integers(0, 5, 300), rng.integers(0, 5, 50)
    ks = [1, 5, 20, 200]
    accs = knn_accuracies(bank, bank_labels, queries, query_labels, ks, 0.07, CPU)
    assert accs == {k: knn_accuracy(bank, bank_labels, queries, query_labels, k, 0.07) for k in ks}
    # bank blocks of 7 rows, merged: the same neighbours as one block; float16 banks find (nearly) the same
    full = knn_topk(bank, queries, 20, CPU)
    blocked = knn_topk(bank, queries, 20, CPU, chunk=16, bank_chunk=7)
    assert torch.equal(full[1], blocked[1])
    torch.testing.assert_close(full[0], blocked[0])
    half = knn_topk(bank.astype(np.float16), queries, 20, CPU)
    assert (half[1][:, :5] == full[1][:, :5]).float().mean() > 0.95


def test_torch_probe_agrees_with_scikit_learn(tiny_shards, params):
    """A random-init encoder's features of the tiny shards: the same objective solved by both backends."""
    ctx = _ctx(tiny_shards, params, _encoder(tiny_shards), None)
    splits = [ctx.features(s) for s in ("train", "val", "test")]
    sk = linear_probe(*splits, [0.01, 0.1, 1.0], 200, backend="sklearn")
    th = linear_probe(*splits, [0.01, 0.1, 1.0], 200, backend="torch")
    assert th["backend"] == "torch" and "backend" not in sk
    assert th["best_c"] == sk["best_c"]
    assert abs(th["top1"] - sk["top1"]) <= 0.01, (th, sk)  # 300 test images: 3 images
    for c, acc in sk["val_top1_by_c"].items():
        assert abs(th["val_top1_by_c"][c] - acc) <= 0.02
    # the sweep on a seeded subsample; the final fit on all
    sub = linear_probe(*splits, [0.1, 1.0], 100, backend="torch", sweep_size=200, seed=3)
    assert sub["sweep_size"] == 200 and abs(sub["top1"] - sk["top1"]) < 0.05


def test_raw_pixels_downsample_above_the_budget():
    small = random_images(2, channels=1, size=28)
    np.testing.assert_array_equal(pixel_features(small), to_float(small).flatten(1).numpy())  # under: as it was
    big = random_images(2, channels=3, size=64)
    assert 3 * 64 * 64 > PIXEL_BUDGET and pixel_features(big).shape == (2, 3 * 32 * 32) == (2, pixel_dim(3, 64))


def test_few_shot_all_way_samples_at_most_max_ways_classes(tiny_shards, default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["few_shot"].update(ways=["all"], shots=[1], episodes=5, classifiers=["prototype"], max_ways=4)
    params = parse_params(raw)
    ctx = EvalContext("raw", None, True, str(tiny_shards), read_manifest(tiny_shards), params, CPU, featurizer=pixel_features)
    result = PROTOCOLS.get("few_shot").run(ctx)
    assert list(result["prototype"]) == ["4way_1shot"]  # 10 classes, 4 drawn per episode


def _fake_imagenet(tmp_path, classes=1000):
    """A manifest that claims ImageNet-1k's splits (no shard files: the refusal comes before any read)."""
    shards = tmp_path / "shards"
    shards.mkdir()
    names = [f"n{i:08d}" for i in range(classes)]
    split = lambda n: {"count": n, "shards": {}, "per_class": {c: n // classes for c in names}}  # noqa: E731
    manifest = {"classes": names, "channels": 3, "image_size": 224, "image_format": "jpeg", "mean": [0.5] * 3, "std": [0.25] * 3,
                "splits": {"train": split(1_231_000), "val": split(50_000), "test": split(50_000)}}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    return shards


@pytest.mark.parametrize("protocol, edit, fix", [
    ("linear_eval", {"linear_eval": {"backend": "sklearn"}}, "linear_eval.backend: torch"),
    ("few_shot", {"few_shot": {"max_ways": 1000}}, "few_shot.max_ways"),
])
def test_stage_refuses_a_size_it_cannot_finish_before_any_work(tmp_path, default_params_dict, protocol, edit, fix):
    raw = copy.deepcopy(default_params_dict)
    for section, values in edit.items():
        raw[section].update(values)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    shards = _fake_imagenet(tmp_path)
    metrics, details = tmp_path / "m.json", tmp_path / "d.json"
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), protocol, "--baseline", "raw_pixels",
                           "--params", str(params), "--shards", str(shards), "--metrics", str(metrics), "--details", str(details),
                           "--feature-cache", str(tmp_path / "features")], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert fix in proc.stderr and "Traceback" not in proc.stderr
    assert not metrics.exists() and not details.exists() and not (tmp_path / "features").exists()
