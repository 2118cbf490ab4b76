"""The report on a text run: header from a text manifest, the Transformer encoders, verdicts
against TF-IDF, the language-modelling table; and the image report's wording left alone."""

import json

import pytest

from pipeline.config import EncoderParams
from pipeline.report.markdown import build_report, encoder_description, language_modelling_table, verdicts
from tests.report.details import write_details

PROTOCOLS = ["linear_eval", "knn", "finetune", "few_shot", "transfer", "label_efficiency", "diagnostics"]
FS = {"prototype": {"5way_1shot": {"mean": 0.4, "ci95": 0.02}, "5way_5shot": {"mean": 0.5, "ci95": 0.02}}}
DIAG = {"alignment": 0.2, "uniformity": -1.5, "effective_rank": 40.0, "feature_dim": 128, "std": 0.05, "std_sqrt_dim": 0.57,
        "collapsed": False, "infonce_loss": 3.0, "mi_lower_bound": 2.0, "infonce_k": 500, "temperature": 0.1, "n_images": 500,
        "views": "two independent maskings: each real token -> [MASK] with p = 0.15"}
TEXT_MANIFEST = {"source": {}, "modality": "text", "classes": [f"c{i}" for i in range(12)], "vocab_size": 4096, "max_length": 64,
                 "splits": {"pretrain": {"count": 10516}, "train": {"count": 10516}, "val": {"count": 1000},
                            "test": {"count": 2880}}}


def _encoder(d, name, top1, encoder=True):
    write_details(d, "linear_eval", name, {"linear": {"top1": top1}})
    write_details(d, "knn", name, {"knn20_top1": top1 - 0.05})
    write_details(d, "few_shot", name, FS)
    write_details(d, "transfer", name, {"fortunes-language": {"top1": 0.9}})
    arms = {"linear": top1 - 0.1} | ({"finetune": top1 - 0.08} if encoder else {})
    write_details(d, "label_efficiency", name, {"0.1": {"n_labels": 1151} | arms})
    if encoder:
        write_details(d, "finetune", name, {"top1": top1 + 0.02, "n_labels": 11516})
        write_details(d, "diagnostics", name, DIAG)
    else:
        for p in ("finetune", "diagnostics"):
            write_details(d, p, name, {"not_applicable": f"{p} trains or augments through an encoder; TF-IDF features have none"})


@pytest.fixture
def text_params(params):
    causal = params.encoder.model_copy(update={"arch": "transformer", "dim": 128, "depth": 2, "heads": 4, "causal": True})
    few_shot = params.protocol_params["few_shot"].model_copy(update={"classifiers": ["prototype"]})
    return params.model_copy(update={
        "methods": ["mlm", "clm"], "baselines": ["tfidf", "random_init", "random_init_clm"], "protocols": PROTOCOLS,
        "data": params.data.model_copy(update={"source": "fortunes"}),
        "encoder": causal.model_copy(update={"causal": False}), "method_encoder": {"clm": causal},
        "protocol_params": params.protocol_params | {"few_shot": few_shot},
    })


@pytest.fixture
def text_metrics(tmp_path):
    for name, top1 in (("mlm", 0.40), ("clm", 0.30), ("random_init", 0.25), ("random_init_clm", 0.22)):
        _encoder(tmp_path, name, top1)
    _encoder(tmp_path, "tfidf", 0.35, encoder=False)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "mlm.json").write_text(json.dumps(
        {"loss": 4.1, "knn_top1": 0.3, "epochs": 10, "masked_accuracy": 0.312, "perplexity": 61.234}))
    (tmp_path / "pretrain" / "clm.json").write_text(json.dumps(
        {"loss": 4.5, "knn_top1": 0.25, "epochs": 10, "perplexity": 88.5, "unigram_perplexity": 412.0}))
    return tmp_path


def test_text_report_renders(text_params, text_metrics, tmp_path):
    out = tmp_path / "report" / "report.md"
    md = build_report(text_params, TEXT_MANIFEST, text_metrics, tmp_path / "no-live", out, out.parent / "figures")
    assert out.read_text() == md
    assert "Data: `fortunes` text entries, BPE vocabulary 4,096, max 64 tokens, splits {'pretrain': 10516" in md
    assert "the 11,516 train+val entries" in md
    assert "| TF-IDF (baseline) | 35.0 | 30.0 | - |" in md  # no finetune column for TF-IDF
    assert "transfer fortunes-language" in md
    assert ("- **mlm** linear top-1 40.0% beats TF-IDF 35.0% and its own architecture at random init 25.0% "
            "(kNN-20 20.0% vs 35.0%).") in md
    assert "- **clm** linear top-1 30.0% does NOT beat TF-IDF 35.0% and its own architecture at random init 22.0%" in md
    assert "| mlm | transformer d128 x2, bidirectional | 10 |" in md and "| clm | transformer d128 x2, causal | 10 |" in md
    assert "| wall time (s) | entries/s |" in md and "images" not in md
    assert "## Language modelling (held-out val)" in md
    assert "| mlm | masked tokens | 31.2 | 61.23 | - |" in md and "| clm | next token | - | 88.50 | 412.00 |" in md
    assert "## Representation diagnostics (test entries)" in md and "Views: two independent maskings" in md
    assert "| mlm | 0.1 | 1151 | 17.0 | 30.0 | 32.0 |" in md  # supervised = random init's finetune arm
    for fig in ("training_curves.png", "method_by_metric.png", "few_shot.png", "label_efficiency.png"):
        assert (out.parent / "figures" / fig).stat().st_size > 1000


def test_language_modelling_table_only_when_a_method_reports_it(text_params):
    results = {"mlm": {"pretrain": {"loss": 1.0, "knn_top1": 0.5}}, "clm": {"pretrain": {"loss": 1.0, "knn_top1": 0.5}}}
    assert language_modelling_table(results, text_params) == []


def test_image_wording_is_unchanged():
    assert encoder_description(EncoderParams()) == "resnet [1, 1, 1, 1] w32"
    assert encoder_description(EncoderParams(arch="vit", patch_size=4, dim=192, depth=6, heads=3)) == "vit p4 d192 x6"
    results = {"simclr": {"linear_eval": {"linear": {"top1": 0.8}}},
               "raw pixels (baseline)": {"linear_eval": {"linear": {"top1": 0.7}}}}
    assert verdicts(results, {}) == ["- **simclr** linear top-1 80.0% beats raw pixels 70.0% and its own architecture at random "
                                     "init (not measured: add its random_init baseline to params.yaml)."]
