"""The evaluation protocols on text: a tiny synthetic text shard folder (4 classes, each with its
own words), a small random Transformer encoder, the TF-IDF baseline and the text views."""

import copy
import math

import numpy as np
import pytest
import torch

from pipeline.config import parse_params
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import load_split
from pipeline.modalities.text.sources import TextSet
from pipeline.modalities.text.codec import write_text_shards
from pipeline.modalities.text.views import FIRST_REGULAR_ID, MASK_ID, TextViews
from pipeline.modalities.text.tokenizer import encode_packed, load_tokenizer
from pipeline.errors import UserError
from pipeline.registry import PROTOCOLS
from pipeline.eval.baselines import baseline_encoder, baseline_featurizer, label
from pipeline.eval.protocol import EvalContext
from pipeline.eval.run import run_protocol
from pipeline.modalities.text.tfidf import TfidfFeaturizer, decode_packed, tfidf_featurizer
from pipeline.modalities.text.datasets.transfer import language_sample
from pipeline.modalities.encoders import build_encoder
from pipeline.modalities.text.encoder import TextEncoder

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")

FILLER = "the a of and to in is it that was he for on are as with his they at be this from".split()
CLASS_WORDS = [["apple", "pear", "plum"], ["river", "lake", "ocean"], ["piano", "violin", "drum"], ["rocket", "planet", "comet"]]
TEST_ONLY = "zebra"  # a word only the test split holds: the TF-IDF vocabulary must not know it


def synthetic(n: int, seed: int, extra: str | None = None) -> TextSet:
    """n entries, class i % 4: 3-7 filler words with two of the class's own words inserted."""
    rng = np.random.default_rng(seed)
    texts, names = [], []
    for i in range(n):
        c = i % 4
        words = list(rng.choice(FILLER, int(rng.integers(3, 8))))
        for _ in range(2):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(CLASS_WORDS[c])))
        if extra:
            words.append(extra)
        texts.append(" ".join(words))
        names.append(f"class{c}")
    return TextSet.from_names(texts, names)


@pytest.fixture(scope="module")
def text_shards(tmp_path_factory):
    splits = {"pretrain": synthetic(160, 0), "train": synthetic(120, 1), "val": synthetic(60, 2),
              "test": synthetic(80, 3, extra=TEST_ONLY)}
    out = tmp_path_factory.mktemp("text_shards")
    write_text_shards(splits, out, 50, source={"test": True}, vocab_size=400, max_length=24)
    return out


@pytest.fixture(scope="module")
def text_params():
    """params.yaml with presets/text.yaml merged over it, shrunk for the synthetic shards (4
    classes, 80 test entries)."""
    import yaml

    from pipeline.config import merge
    from tests.conftest import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(raw, yaml.safe_load((REPO / "presets" / "text.yaml").read_text()))
    assert raw["data"]["source"] == "fortunes" and raw["encoder"]["arch"] == "transformer" and "tfidf" in raw["baselines"]
    raw["encoder"].update(dim=32, depth=1, heads=2, mlp_ratio=2.0)
    raw["text"].update(view_mask_p=0.15, transfer_per_language=30, tfidf_max_features=500)
    raw["finetune"].update(epochs=5, lr=0.03, batch_size=32)  # lr per 256 (AdamW)
    raw["linear_eval"].update(sgd_epochs=1)  # asked for, but text has no augmented views: skipped, said why
    raw["few_shot"].update(ways=[4], shots=[1, 5], queries=5, episodes=20)
    raw["knn"].update(ks=[5])
    raw["label_efficiency"].update(fractions=[0.25], min_steps=20)
    raw["diagnostics"].update(images=64, tsne=False)
    return parse_params(raw)


def text_encoder(params, manifest, seed=0):
    torch.manual_seed(seed)
    return build_encoder(params.encoder, manifest)


def ctx_for(shards, params, encoder=None, featurizer=None, pretrained=True, name="enc"):
    return EvalContext(name, encoder, pretrained, str(shards), read_manifest(shards), params, CPU, featurizer=featurizer)


def _finite_numbers(d: dict) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in d.values())


# --- text views -------------------------------------------------------------------------


def random_packed(n=2000, length=32, seed=0) -> torch.Tensor:
    """[CLS] ids... [SEP] of random lengths; ids drawn over the whole vocabulary including the
    special ids (an [UNK] inside an entry must not be masked either). Padding columns hold
    junk ids too: attention 0 alone says a column is not a token."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 2, length, dtype=torch.long)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    x[:, 0] = torch.randint(1, 300, (n, length), generator=g)
    for i, n_tok in enumerate(lengths.tolist()):
        x[i, 0, 0], x[i, 0, n_tok - 1] = 2, 3
        x[i, 1, :n_tok] = 1
    return x


def test_text_views_mask_only_real_regular_tokens_at_about_p():
    x = random_packed()
    views = TextViews(0.15, seed=0, device=CPU)
    v = views(x)
    assert v.dtype == torch.int64 and v.shape == x.shape and torch.equal(v[:, 1], x[:, 1])
    changed = v[:, 0] != x[:, 0]
    maskable = x[:, 1].bool() & (x[:, 0] >= FIRST_REGULAR_ID)
    assert not (changed & ~maskable).any()  # padding, [CLS], [SEP], [UNK]... never masked
    assert (v[:, 0][changed] == MASK_ID).all()
    rate = changed.sum().item() / maskable.sum().item()
    assert abs(rate - 0.15) < 0.01, rate  # ~30k maskable tokens: sd ~0.002


def test_text_views_are_independent_draws_fixed_by_the_seed():
    x = random_packed(200)
    a = TextViews(0.15, seed=3, device=CPU)
    v1, v2 = a(x, view=0), a(x, view=1)
    assert not torch.equal(v1, v2)  # two views: two independent maskings
    b = TextViews(0.15, seed=3, device=CPU)
    assert torch.equal(b(x), v1) and torch.equal(b(x), v2)  # the same seed, the same sequence of views
    assert torch.equal(TextViews(0.0, 0, CPU)(x), x)
    with pytest.raises(ValueError, match="packed int64"):
        a(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))


# --- TF-IDF baseline --------------------------------------------------------------------


def test_tfidf_is_fitted_only_on_the_given_texts_and_deterministic():
    fit = ["apple pear river", "river lake apple", "piano drum"]
    f = TfidfFeaturizer(fit, max_features=100)
    vocab = set(f.vectorizer.vocabulary_)
    assert {"apple", "river", "apple pear", "piano drum"} <= vocab
    assert all(all(w in " ".join(fit).split() for w in term.split()) for term in vocab)
    unseen = f(["zebra giraffe"])
    assert unseen.dtype == np.float32 and unseen.shape == (1, f.feature_dim) and not unseen.any()
    again = TfidfFeaturizer(fit, max_features=100)
    np.testing.assert_array_equal(f(["apple river", "drum piano"]), again(["apple river", "drum piano"]))
    assert TfidfFeaturizer(fit, max_features=3).feature_dim == 3


def test_tfidf_of_packed_entries_sees_the_decoded_truncated_text(text_shards):
    tok = load_tokenizer(text_shards)
    texts = ["apple pear the river", "piano " * 40]  # the second is truncated at 24 tokens
    packed = encode_packed(tok, texts, 24)
    decoded = decode_packed(tok, packed)
    assert decoded[0].strip() == texts[0]
    assert 0 < decoded[1].count("piano") < 40
    f = TfidfFeaturizer(["apple pear river piano"], 50, tok)
    np.testing.assert_array_equal(f(packed), f(decoded))
    junk = packed.clone()
    junk[0, 0, int(packed[0, 1].sum()):] = packed[1, 0, 1]  # "piano" ids in the padding columns (attention 0)
    assert decode_packed(tok, junk) == decoded  # only attended columns are tokens


def test_tfidf_baseline_fits_on_the_pretrain_split_and_finds_the_word_signal(text_shards, text_params):
    featurize = baseline_featurizer(text_params, "tfidf", str(text_shards))
    tok = load_tokenizer(text_shards)
    pretrain, _ = load_split(text_shards, "pretrain")
    want = TfidfFeaturizer(decode_packed(tok, pretrain), 500, tok)
    test, _ = load_split(text_shards, "test")
    np.testing.assert_array_equal(featurize(test), want(test))
    assert TEST_ONLY not in want.vectorizer.vocabulary_  # the test split's own word: not fitted on
    ctx = ctx_for(text_shards, text_params, None, featurize, pretrained=False, name="tfidf")
    lin = PROTOCOLS.get("linear_eval").run(ctx)
    knn = PROTOCOLS.get("knn").run(ctx)
    assert lin["linear"]["top1"] >= 0.95 and knn["knn5_top1"] >= 0.9  # chance 0.25: the class words decide
    assert "linear_sgd" not in lin and "linear_sgd_not_applicable" not in lin  # no encoder: nothing to skip
    for name in ("finetune", "diagnostics"):
        assert "TF-IDF features have none" in PROTOCOLS.get(name).not_applicable(ctx)
    le = PROTOCOLS.get("label_efficiency").run(ctx)
    assert set(le["0.25"]) == {"linear", "n_labels", "fraction_effective"}
    assert label("tfidf") == "TF-IDF (baseline)" and baseline_encoder(text_params, "tfidf", read_manifest(text_shards)) is None


def test_tfidf_featurizer_fits_lazily(text_shards, monkeypatch):
    import pipeline.modalities.text.tfidf as tfidf

    calls = []
    monkeypatch.setattr(tfidf, "load_split", lambda *a: calls.append(a) or load_split(*a))
    featurize = tfidf_featurizer(str(text_shards), 100)
    assert calls == []  # a protocol that does not apply to it (finetune) fits nothing
    x, _ = load_split(text_shards, "val")
    featurize(x)
    featurize(x)
    assert calls == [(str(text_shards), "pretrain")]


# --- every protocol on a text encoder ---------------------------------------------------


def test_every_protocol_runs_on_a_text_encoder(text_shards, text_params):
    manifest = read_manifest(text_shards)
    enc = text_encoder(text_params, manifest)
    assert isinstance(enc, TextEncoder)
    ctx = ctx_for(text_shards, text_params, enc)
    for name in PROTOCOLS.names():
        PROTOCOLS.get(name).check(text_params, manifest)
        assert PROTOCOLS.get(name).not_applicable(ctx) is None, name
        headline, details = run_protocol(PROTOCOLS.get(name), ctx)
        assert headline and _finite_numbers(headline), (name, headline)
    feats, labels = ctx.features("test")
    assert feats.shape == (80, enc.feature_dim) and feats.dtype == np.float32 and np.isfinite(feats).all()


def test_linear_eval_on_text_skips_the_augmented_sgd_probe_and_says_why(text_shards, text_params):
    ctx = ctx_for(text_shards, text_params, text_encoder(text_params, read_manifest(text_shards)))
    res = PROTOCOLS.get("linear_eval").run(ctx)
    assert "linear_sgd" not in res and "augmented images" in res["linear_sgd_not_applicable"]
    assert 0 <= res["linear"]["top1"] <= 1
    assert PROTOCOLS.get("linear_eval").headline(res) == {"linear_top1": res["linear"]["top1"]}


def test_finetune_and_label_efficiency_train_on_packed_entries(text_shards, text_params):
    manifest = read_manifest(text_shards)
    enc = text_encoder(text_params, manifest)
    before = copy.deepcopy(enc.state_dict())
    scratch = PROTOCOLS.get("finetune").run(ctx_for(text_shards, text_params, enc, pretrained=False))
    assert scratch["n_labels"] == 180 and scratch["encoder_lr_mult"] == 1.0
    assert scratch["top1"] > 0.5 and math.isfinite(scratch["train_loss_last_epoch"])  # chance 0.25
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # trained a copy
    le = PROTOCOLS.get("label_efficiency").run(ctx_for(text_shards, text_params, enc))
    assert set(le["0.25"]) >= {"linear", "finetune", "n_labels", "epochs"} and 0 <= le["0.25"]["finetune"] <= 1


def test_diagnostics_on_text_use_two_maskings(text_shards, text_params):
    ctx = ctx_for(text_shards, text_params, text_encoder(text_params, read_manifest(text_shards)))
    res = PROTOCOLS.get("diagnostics").run(ctx)
    assert res["n_images"] == 64 and res["infonce_k"] == 64 and "p = 0.15" in res["views"]
    assert 0 < res["alignment"] <= 4  # masked views differ from each other, so do their features
    assert 0 < res["effective_rank"] <= res["feature_dim"] and not res["collapsed"]
    lines = PROTOCOLS.get("diagnostics").section({"enc": {"diagnostics": res}}, {}, text_params)
    assert lines[0] == "## Representation diagnostics (test entries)" and any(line.startswith("Views: two") for line in lines)


def test_transfer_language_id_on_text(text_shards, text_params):
    manifest = read_manifest(text_shards)
    enc = text_encoder(text_params, manifest)
    res = PROTOCOLS.get("transfer").run(ctx_for(text_shards, text_params, enc))
    r = res["fortunes-language"]
    assert r["n_train"] + r["n_test"] == 4 * 30 and 0 <= r["top1"] <= 1
    tfidf = ctx_for(text_shards, text_params, None, baseline_featurizer(text_params, "tfidf", str(text_shards)), name="tfidf")
    assert 0 <= PROTOCOLS.get("transfer").run(tfidf)["fortunes-language"]["top1"] <= 1


def test_language_sample_is_balanced_seeded_and_drops_duplicates():
    texts = [f"en{i}" for i in range(10)] + [f"de{i}" for i in range(8)] + ["both", "both"]
    langs = ["en"] * 10 + ["de"] * 8 + ["en", "de"]
    s = language_sample(texts, langs, 5, seed=0)
    assert s.classes == ["de", "en"] and np.bincount(s.labels).tolist() == [5, 5] and "both" not in s.texts
    assert language_sample(texts, langs, 5, seed=0).texts == s.texts and language_sample(texts, langs, 5, seed=1).texts != s.texts
    with pytest.raises(UserError, match="has only 8 distinct"):
        language_sample(texts, langs, 9, seed=0)


def test_a_features_baseline_of_the_other_modality_is_refused(text_shards, text_params, tiny_shards, params):
    with pytest.raises(UserError, match="baseline 'raw_pixels' cannot measure text shards.*use 'tfidf'"):
        baseline_featurizer(text_params, "raw_pixels", str(text_shards))
    with pytest.raises(UserError, match="baseline 'tfidf' cannot measure image shards.*use 'raw_pixels'"):
        baseline_featurizer(params, "tfidf", str(tiny_shards))
    assert baseline_featurizer(text_params, "random_init", str(text_shards)) is None


def _with_transfer(p, transfer):
    return p.model_copy(update={"protocol_params": p.protocol_params | {"transfer": transfer}})


def test_transfer_refuses_datasets_of_the_other_modality(text_shards, text_params, tiny_shards, params):
    with pytest.raises(UserError, match=r"\['digits', 'mnist-sample'\] do not fit text shards"):
        PROTOCOLS.get("transfer").check(_with_transfer(text_params, params.protocol_params["transfer"]), read_manifest(text_shards))
    image = _with_transfer(params, text_params.protocol_params["transfer"])
    with pytest.raises(UserError, match="do not fit image shards"):
        PROTOCOLS.get("transfer").check(image, read_manifest(tiny_shards))
    PROTOCOLS.get("transfer").check(params, read_manifest(tiny_shards))
