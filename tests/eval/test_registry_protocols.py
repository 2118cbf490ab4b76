"""The evaluation-protocol registry, and each protocol through its interface on tiny real data.

``EvalContext`` on the tiny_shards fixture (400 train, 200 val, 300 test Fashion-MNIST
images): raw pixels and a small random encoder, as the baselines stage runs them."""

import copy

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import EncoderParams, parse_params
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split
from pipeline.registry import PROTOCOLS
from pipeline.eval.baselines import baseline_encoder, baseline_featurizer, matching_random_init
from pipeline.eval.algorithms.label_fractions import balanced_subset
from pipeline.eval.protocol import EvalContext, Protocol
from pipeline.eval.run import run_protocol
from pipeline.modalities.encoders import build_encoder

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small(default_params_dict):
    """Default params, shrunk so each protocol runs in seconds."""
    raw = copy.deepcopy(default_params_dict)
    raw["finetune"].update(epochs=6, batch_size=32, lr=0.4)  # label_efficiency.finetune aliases it
    raw["linear_eval"].update(sgd_epochs=1)
    raw["few_shot"].update(episodes=20, shots=[1, 5])
    raw["label_efficiency"].update(fractions=[0.1], min_steps=100)
    raw["diagnostics"].update(images=200, tsne=False)
    raw["transfer"].update(datasets=["digits"])
    raw["knn"].update(ks=[20])
    return parse_params(raw)


def ctx_for(shards, params, encoder=None, pretrained=True, name="enc"):
    """A context for ``encoder``, or with none for the raw-pixels baseline (its featurizer)."""
    featurizer = baseline_featurizer(params, "raw_pixels", str(shards)) if encoder is None else None
    return EvalContext(name, encoder, pretrained, str(shards), read_manifest(shards), params, CPU, featurizer=featurizer)


def encoder(shards, seed=0):
    torch.manual_seed(seed)
    return build_encoder(EncoderParams(width=8, layers=[1, 1]), read_manifest(shards))


def test_every_protocol_has_its_params_section_and_runs_by_default(default_params_dict, params):
    names = PROTOCOLS.names()
    assert set(names) == set(params.protocols), "params.yaml protocols: should run every registered protocol"
    for name in names:
        protocol = PROTOCOLS.get(name)
        assert isinstance(protocol, Protocol) and protocol.name == name
        assert name in default_params_dict, f"params.yaml needs a '{name}:' section"
        assert params.protocol_params[name] == protocol.Params.model_validate(default_params_dict[name])


def test_unknown_protocol_in_params_names_the_valid_ones(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["protocols"] = ["linear_eval", "linear-probe"]
    with pytest.raises(Exception, match=r"unknown protocol\(s\) \['linear-probe'\]; valid protocols are"):
        parse_params(raw)


def test_headlines_are_numbers_and_a_few(tiny_shards, small):
    ctx = ctx_for(tiny_shards, small, encoder(tiny_shards))
    for name in PROTOCOLS.names():
        headline, details = run_protocol(PROTOCOLS.get(name), ctx)
        assert headline and len(headline) <= 8, (name, headline)
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in headline.values()), (name, headline)
        assert details["wall_seconds"] >= 0 and "wall_seconds" not in headline  # volatile: details only
        assert set(details) == {"result", "wall_seconds"}


def test_raw_pixel_protocols_measure_real_signal(tiny_shards, small):
    ctx = ctx_for(tiny_shards, small, None, pretrained=False, name="raw_pixels")
    lin = PROTOCOLS.get("linear_eval").run(ctx)
    knn = PROTOCOLS.get("knn").run(ctx)
    assert lin["linear"]["top1"] > 0.55 and knn["knn20_top1"] > 0.5  # chance 0.10 on 400 labelled images
    assert "linear_sgd" not in lin  # it trains through an encoder; raw pixels have none
    for name in ("finetune", "diagnostics"):  # the committed details files' note, word for word
        assert PROTOCOLS.get(name).not_applicable(ctx) == f"{name} trains or augments through an encoder; raw pixels have none"
    le = PROTOCOLS.get("label_efficiency").run(ctx)
    assert set(le["0.1"]) == {"linear", "n_labels", "fraction_effective"}


def test_finetune_trains_a_copy_on_train_plus_val(tiny_shards, small):
    enc = encoder(tiny_shards)
    before = copy.deepcopy(enc.state_dict())
    ssl = PROTOCOLS.get("finetune").run(ctx_for(tiny_shards, small, enc, pretrained=True))
    scratch = PROTOCOLS.get("finetune").run(ctx_for(tiny_shards, small, enc, pretrained=False))
    assert ssl["n_labels"] == 600  # 400 train + 200 val
    assert ssl["encoder_lr_mult"] == small.protocol_params["finetune"].encoder_lr_mult and scratch["encoder_lr_mult"] == 1.0
    assert scratch["top1"] > 0.35  # chance 0.10: supervised from scratch learns
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # the context's encoder is untouched


def test_label_efficiency_arms_share_the_labels(tiny_shards, small):
    enc = encoder(tiny_shards)
    ctx = ctx_for(tiny_shards, small, enc)
    res = PROTOCOLS.get("label_efficiency").run(ctx)
    (_, y_tr), (_, y_va) = ctx.features("train"), ctx.features("val")
    n = len(balanced_subset(y_tr, 0.1, 0)) + len(balanced_subset(y_va, 0.1, 1))
    assert list(res) == ["0.1"] and res["0.1"]["n_labels"] == n and res["0.1"]["fraction_effective"] == n / 600 and res["0.1"]["epochs"] == 50
    assert res["0.1"]["linear"] > 0.3 and res["0.1"]["finetune"] > 0.2  # chance 0.10 with 60 labels


def test_label_efficiency_refuses_the_full_fraction(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["label_efficiency"]["fractions"] = [0.1, 1.0]
    with pytest.raises(Exception, match=r"every fraction must be in \(0, 1\)"):
        parse_params(raw)


def test_features_are_computed_once_per_split_and_leave_the_encoder_alone(tiny_shards, small, monkeypatch):
    enc = encoder(tiny_shards).train()
    ctx = ctx_for(tiny_shards, small, enc)
    calls = []
    real = ctx.featurize
    monkeypatch.setattr(ctx, "featurize", lambda images: calls.append(len(images)) or real(images))
    PROTOCOLS.get("linear_eval").run(ctx)
    PROTOCOLS.get("knn").run(ctx)
    PROTOCOLS.get("few_shot").run(ctx)
    assert sorted(calls) == [200, 300, 400]  # train, val, test: once each across three protocols
    assert enc.training  # featurizing did not switch the caller's encoder to eval mode


def test_features_stream_batch_by_batch_without_holding_the_images(tiny_shards, small, monkeypatch):
    """400 train images in streamed batches of 128 (the last one 16): every image once, in
    the split's order, the features of the whole split; no split's images are kept."""
    from pipeline.eval import protocol

    monkeypatch.setattr(protocol, "BATCH", 128)
    ctx = ctx_for(tiny_shards, small, encoder(tiny_shards))
    sizes = []
    real = ctx.featurize
    monkeypatch.setattr(ctx, "featurize", lambda images: sizes.append(len(images)) or real(images))
    feats, labels = ctx.features("train")
    assert sizes == [128, 128, 128, 16] and ctx._splits == {}
    images, want_labels = load_split(tiny_shards, "train")
    np.testing.assert_array_equal(labels, want_labels.numpy())
    np.testing.assert_allclose(feats, real(images), rtol=1e-5, atol=1e-5)


def test_random_init_baseline_is_the_pretraining_init_and_leaves_the_global_rng(tiny_shards, params):
    manifest = read_manifest(tiny_shards)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    enc = baseline_encoder(params, "random_init", manifest)
    assert torch.equal(torch.rand(3), expected_next)  # global RNG untouched
    torch.manual_seed(params.seed)  # what pretraining does before building its encoder
    ref = build_encoder(params.encoder, manifest)
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), ref.state_dict().values()))
    assert baseline_encoder(params, "raw_pixels", manifest) is None


def test_each_method_is_matched_to_the_random_init_of_its_own_architecture(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["methods"] = ["simclr", "mae"]
    raw["baselines"] = ["raw_pixels", "random_init", "random_init_mae"]
    p = parse_params(raw)
    assert matching_random_init(p, "simclr") == "random_init" and matching_random_init(p, "mae") == "random_init_mae"
    raw["baselines"] = ["raw_pixels", "random_init"]
    assert matching_random_init(parse_params(raw), "mae") is None  # the report says it is not measured
    raw["baselines"] = ["random_init_nope"]
    with pytest.raises(Exception, match="unknown baseline"):
        parse_params(raw)


def test_dvc_yaml_runs_every_listed_protocol_on_every_method_and_baseline():
    from pathlib import Path

    dvc = yaml.safe_load((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())["stages"]
    for stage, axis in (("evaluate", "method"), ("baseline", "baseline")):
        s = dvc[stage]
        assert s["matrix"] == {axis: "${%ss}" % axis, "protocol": "${protocols}"}
        assert "${item.protocol}" in s["params"]  # each protocol's own section, nothing else of the protocols
        assert s["cmd"].startswith("python stages/evaluate.py ${item.protocol}")
        assert any("${item.protocol}/${item.%s}.json" % axis in str(m) for m in s["metrics"])


def test_image_protocols_never_hold_a_whole_split(tiny_shards, small, monkeypatch):
    """Fine-tuning, the SGD probe, label efficiency's fine-tune arm and the diagnostics read
    image splits as streams: ``load_split`` (a whole split as one tensor) is never called,
    so a stage's memory does not grow with the dataset's images."""
    import pipeline.eval.protocol as protocol_module

    def refuse(*args):
        raise AssertionError(f"load_split{args}: an image split held whole")

    monkeypatch.setattr(protocol_module, "load_split", refuse)
    sgd = small.protocol_params["linear_eval"].model_copy(update={"sgd_epochs": 4, "sgd_batch_size": 50, "sgd_lr": 1.0})  # 32 steps, not 1
    params = small.model_copy(update={"protocol_params": small.protocol_params | {"linear_eval": sgd}})
    ctx = ctx_for(tiny_shards, params, encoder(tiny_shards))
    ran = {name: PROTOCOLS.get(name).run(ctx) for name in ("finetune", "linear_eval", "label_efficiency", "diagnostics")}
    assert ran["finetune"]["n_labels"] == 600 and ran["finetune"]["top1"] > 0.2  # chance 0.10
    assert ran["linear_eval"]["linear_sgd"]["top1"] > 0.2
    assert ran["label_efficiency"]["0.1"]["finetune"] > 0.2
    assert ran["diagnostics"]["effective_rank"] > 1
