"""The text methods (``modality == "text"``), parametrized over the registry as
test_every_method.py is over the image ones: packed int64 ``[N, 2, L]`` batches of a tiny BPE
tokenizer's ids, real fortunes where the fortune packages are installed."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams, load_params
from pipeline.modalities.text import sources as T
from pipeline.modalities.text.tokenizer import encode_packed, train_tokenizer
from pipeline.errors import UserError
from pipeline.registry import METHODS
from pipeline.methods._base import Method
from pipeline.modalities.encoders import build_encoder, load_encoder, save_encoder
from pipeline.modalities.text.encoder import TextEncoder, unpack_text
from pipeline.modalities.text.objectives import IGNORE, clm_loss, mask_tokens, mlm_loss
from pipeline.train import checkpoint as ckpt
from pipeline.train.optim import param_groups

TEXT_METHODS = [n for n in METHODS.names() if METHODS.get(n).modality == "text"]
REPO = Path(__file__).resolve().parents[2]
FORTUNES = Path(T.FORTUNE_DIR, "people")
needs_fortunes = pytest.mark.skipif(not FORTUNES.exists(), reason="fortunes not installed (apt-get install fortunes)")
L = 48  # the packed width (manifest max_length)
CPU = torch.device("cpu")


def _synthetic(n: int) -> list[str]:
    """Sentences of a small vocabulary, for the tests that need text but not real text."""
    words = "the a cat dog sat on mat ran far away quickly never always why what who is was not and or but".split()
    rng = random.Random(0)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 30))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def corpus():
    """``(tokenizer, texts)``: 512 fortunes (else synthetic sentences), a 500-token BPE learned on them."""
    texts = T.read_entries(FORTUNES)[:512] if FORTUNES.exists() else _synthetic(512)
    return train_tokenizer(texts, 500), texts


def _build(name: str, vocab_size: int, seed: int = 0, causal: bool | None = None, dim: int = 32) -> Method:
    cls = METHODS.get(name)
    enc = EncoderParams(arch="transformer", dim=dim, depth=2, heads=4, causal=cls.causal if causal is None else causal)
    torch.manual_seed(seed)
    encoder = build_encoder(enc, {"modality": "text", "vocab_size": vocab_size, "max_length": L})
    return cls(encoder, cls.Params(), AugmentParams(), seed, CPU)


def _batches(splits: dict[str, torch.Tensor], size: int = 64):
    """``batches(split)`` as the pretrain stage passes it: ``(x, labels)`` in order."""
    return lambda split: ((x, torch.zeros(len(x), dtype=torch.long)) for x in splits[split].split(size))


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_registered_as_text_with_params_defaults(name):
    cls = METHODS.get(name)
    assert issubclass(cls, Method) and cls.modality == "text" and cls.name == name
    cls.Params()  # every hyperparameter has the paper's default


def test_bert_defaults():
    p = METHODS.get("mlm").Params()
    assert (p.mask_prob, p.mask_token_frac, p.random_token_frac) == (0.15, 0.8, 0.1)
    with pytest.raises(ValueError, match="at most 1"):
        METHODS.get("mlm").Params(mask_token_frac=0.95, random_token_frac=0.1)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_training_step_gives_finite_loss_and_gradients(name, corpus):
    tok, texts = corpus
    method = _build(name, tok.get_vocab_size()).train()
    x = encode_packed(tok, texts[:32], L)
    out = method(x, torch.zeros(32, dtype=torch.long))  # as the loop calls it: labels are not passed on
    assert set(out) >= {"loss"} and out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    assert out["loss"].item() == pytest.approx(math.log(tok.get_vocab_size()), rel=0.2)  # a fresh model guesses
    out["loss"].backward()
    for n, p in method.encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_training_loss_is_the_pure_objective(name, corpus):
    """The methods compute the LM head at the predicted positions only; that is the loss of
    ``pipeline/modalities/text/objectives.py`` (checked against naive loops) on every position."""
    tok, texts = corpus
    method = _build(name, tok.get_vocab_size(), seed=5).train()
    x = encode_packed(tok, texts[:32], L)
    ids, att = unpack_text(x)
    backbone = method.encoder.backbone
    if name == "clm":
        want = clm_loss(backbone.logits(backbone(ids, att)), ids, att)
    else:
        gen = torch.Generator()
        gen.set_state(method.gen.get_state())
        inputs, labels = mask_tokens(ids, att, [0, 1, 2, 3, 4], 4, tok.get_vocab_size(), gen)
        want = mlm_loss(backbone.logits(backbone(inputs, att)), labels)
    torch.testing.assert_close(method.training_step(x)["loss"], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_the_method_refuses_the_other_attention(name):
    cls = METHODS.get(name)
    with pytest.raises(UserError, match=f"{name}.encoder.causal"):
        _build(name, 50, causal=not cls.causal)
    image = build_encoder(EncoderParams(), {"channels": 1, "image_size": 28, "mean": [0.3], "std": [0.35]})
    with pytest.raises(UserError, match="encoder.arch"):
        cls(image, cls.Params(), AugmentParams(), 0, CPU)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_params_yaml_sections_build_on_text_shards(name):
    """params.yaml with the text preset gives each method an encoder it accepts."""
    params = load_params(REPO / "params.yaml", preset="text")
    enc = build_encoder(params.encoder_for(name), {"modality": "text", "vocab_size": 100, "max_length": L})
    method = METHODS.get(name)(enc, params.method_params[name], params.augment, 0, CPU)
    assert isinstance(method.encoder, TextEncoder) and method.encoder.backbone.causal == METHODS.get(name).causal


def test_clm_never_sees_the_future(corpus):
    """Changing token t+1 changes no hidden state (so no logit) at positions <= t."""
    tok, texts = corpus
    method = _build("clm", tok.get_vocab_size()).eval()
    ids, att = unpack_text(encode_packed(tok, texts[:8], L))
    backbone = method.encoder.backbone
    h = backbone(ids, att)
    for t in range(ids.shape[1] - 1):
        other = ids.clone()
        other[:, t + 1] = 5 + (other[:, t + 1] - 4) % (tok.get_vocab_size() - 5)
        h2 = backbone(other, att)
        torch.testing.assert_close(backbone.logits(h2[:, : t + 1]), backbone.logits(h[:, : t + 1]), atol=1e-5, rtol=1e-5)
        changed = att[:, t + 1].bool()
        assert not torch.allclose(h2[changed, t + 1], h[changed, t + 1])


def test_mlm_sees_both_sides(corpus):
    tok, texts = corpus
    method = _build("mlm", tok.get_vocab_size()).eval()
    ids, att = unpack_text(encode_packed(tok, texts[:8], L))
    other = ids.clone()
    other[:, 2] = 5 + (other[:, 2] - 4) % (tok.get_vocab_size() - 5)
    assert not torch.allclose(method.encoder.backbone(other, att)[:, 0], method.encoder.backbone(ids, att)[:, 0])


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_features_ignore_padding(name, corpus):
    """An entry's features do not depend on its batch mates (how much padding is trimmed) or
    on what sits in its padding."""
    tok, texts = corpus
    enc = _build(name, tok.get_vocab_size()).encoder.eval()
    x = encode_packed(tok, texts[:16], L)
    together = enc(x)
    alone = torch.cat([enc(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    junk = x.clone()
    junk[:, 0][x[:, 1] == 0] = 7
    torch.testing.assert_close(enc(junk), together, atol=1e-5, rtol=1e-5)


def test_mlm_extra_state_round_trip_gives_the_same_next_masks(corpus, tmp_path):
    tok, texts = corpus
    method = _build("mlm", tok.get_vocab_size(), seed=1)
    x = encode_packed(tok, texts[:64], L)
    ids, att = unpack_text(x)
    method._mask(ids, att, method.gen)  # the generator has moved on from its seed
    # through a checkpoint as the loop writes it (torch.load weights_only)
    ckpt.save(tmp_path / "c.pt", {"ranks": [{"extra": method.extra_state()}], "fingerprint": "f", "finished": False})
    state = ckpt.load_resumable(tmp_path / "c.pt", "f")["ranks"][0]["extra"]
    want = method._mask(ids, att, method.gen)
    fresh = _build("mlm", tok.get_vocab_size(), seed=2)
    assert not torch.equal(fresh._mask(ids, att, fresh.gen)[1], want[1])  # another seed, other masks
    fresh.load_extra_state(state)
    got = fresh._mask(ids, att, fresh.gen)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # a resumed training step: the same weights and state give the same loss, to the bit
    fresh.load_state_dict(method.state_dict())
    fresh.load_extra_state(state)
    method.load_extra_state(state)
    assert torch.equal(fresh.training_step(x)["loss"], method.training_step(x)["loss"])


def test_mlm_masks_follow_bert(corpus):
    """Through the method: only real, non-special tokens are chosen, about 15% of them."""
    tok, texts = corpus
    method = _build("mlm", tok.get_vocab_size())
    ids, att = unpack_text(encode_packed(tok, texts, L))
    inputs, labels = method._mask(ids, att, method.gen)
    chosen = labels != IGNORE
    assert not (chosen & ((ids < 5) | (att == 0))).any()
    assert abs(chosen.sum() / ((ids >= 5) & att.bool()).sum() - 0.15) < 0.02
    assert torch.equal(inputs[~chosen], ids[~chosen])


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_held_out_metrics_are_finite_and_deterministic(name, corpus):
    tok, texts = corpus
    method = _build(name, tok.get_vocab_size()).train()
    batches = _batches({"pretrain": encode_packed(tok, texts[:400], L), "val": encode_packed(tok, texts[400:], L)})
    before = method.extra_state()
    first = method.held_out_metrics(batches)
    want = {"mlm": {"masked_accuracy", "perplexity"}, "clm": {"perplexity", "unigram_perplexity"}}[name]
    assert set(first) == want and all(isinstance(v, float) and math.isfinite(v) for v in first.values())
    assert all(v > 1 for k, v in first.items() if "perplexity" in k)
    assert 0 <= first.get("masked_accuracy", 0) <= 1
    assert method.held_out_metrics(batches) == first  # fixed-seed masking: the same numbers every time
    assert method.training  # the mode it was in
    for k, v in before.items():  # the training masks do not move
        assert torch.equal(v["gen"] if k == "views" else v, method.extra_state()[k]["gen"] if k == "views" else method.extra_state()[k])


def test_unigram_perplexity_is_add_one_over_pretrain_counts(corpus):
    """A naive restatement: counts of every real token but [CLS] on "pretrain", scored on "val"."""
    tok, texts = corpus
    V = tok.get_vocab_size()
    pre, val = encode_packed(tok, texts[:300], L), encode_packed(tok, texts[300:400], L)
    counts = [0] * V
    for row in pre:
        for t in range(1, L):
            if row[1, t]:
                counts[row[0, t]] += 1
    total, nll, n = sum(counts), 0.0, 0
    for row in val:
        for t in range(1, L):
            if row[1, t]:
                nll -= math.log((counts[row[0, t]] + 1) / (total + V))
                n += 1
    got = _build("clm", V).held_out_metrics(_batches({"pretrain": pre, "val": val}, size=37))
    assert got["unigram_perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-9)


@pytest.mark.parametrize("name", TEXT_METHODS)
def test_encoder_save_load_round_trip(name, corpus, tmp_path):
    tok, texts = corpus
    method = _build(name, tok.get_vocab_size(), seed=4)
    save_encoder(method.encoder, tmp_path / "e.pt")
    again = load_encoder(tmp_path / "e.pt")
    assert again.backbone.causal == METHODS.get(name).causal
    x = encode_packed(tok, texts[:20], L)
    assert torch.equal(again(x), method.encoder.eval()(x))


@pytest.fixture(scope="module")
def trained(corpus):
    """Each text method trained 50 AdamW steps of 32 fortunes (dim 64): the losses and the method."""
    tok, texts = corpus
    x = encode_packed(tok, texts, L)
    out = {}
    for name in TEXT_METHODS:
        method = _build(name, tok.get_vocab_size(), dim=64).train()
        opt = torch.optim.AdamW(param_groups(method, params=method.optimized_parameters()), lr=3e-3)
        losses = []
        for step in range(50):
            batch = x[(step * 32) % 384 :][:32]  # the last 128 entries stay held out
            loss = method(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            method.after_optimizer_step((step + 1) / 50)
            losses.append(loss.item())
        out[name] = (losses, method)
    return out


@needs_fortunes
@pytest.mark.parametrize("name", TEXT_METHODS)
def test_loss_decreases_on_fortunes(name, trained):
    losses, _ = trained[name]
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.5, losses  # measured: MLM 6.06 -> 5.35, CLM 6.03 -> 5.10 (ln 500 = 6.2)


@needs_fortunes
def test_clm_beats_the_unigram_model_after_a_little_training(corpus, trained):
    tok, texts = corpus
    _, method = trained["clm"]
    metrics = method.held_out_metrics(_batches({"pretrain": encode_packed(tok, texts[:384], L),
                                                "val": encode_packed(tok, texts[384:], L)}))
    assert metrics["perplexity"] < metrics["unigram_perplexity"], metrics  # measured: 182 < 211 (517 untrained)


@needs_fortunes
def test_mlm_predicts_masked_tokens_after_a_little_training(corpus, trained):
    tok, texts = corpus
    _, method = trained["mlm"]
    fresh = _build("mlm", tok.get_vocab_size(), dim=64)
    batches = _batches({"val": encode_packed(tok, texts[384:], L)})
    before, after = fresh.held_out_metrics(batches), method.held_out_metrics(batches)
    assert after["perplexity"] < before["perplexity"] and after["masked_accuracy"] > before["masked_accuracy"], (before, after)
