import pytest
import torch

from pipeline.modalities.text.tokenizer import SPECIALS, encode_batch, encode_packed, load_tokenizer, train_tokenizer
from pipeline.errors import UserError

TEXTS = [f"fortune number {i}: a penny saved is {i % 7} pennies earned" for i in range(300)] + ["Grüße aus Köln"]


def test_deterministic_and_specials():
    a, b = train_tokenizer(TEXTS, 300), train_tokenizer(TEXTS, 300)
    assert a.to_str() == b.to_str()
    assert [a.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3, 4]
    assert a.get_vocab_size() <= 300


def test_encode_batch_pads_and_truncates():
    tok = train_tokenizer(TEXTS, 300)
    ids, att = encode_batch(tok, ["short", TEXTS[5] * 10], max_length=16)
    assert ids.shape == att.shape == (2, 16)
    assert ids[1, 0] == 2 and ids[1, 15] == 3 and att[1].all()
    n = int(att[0].sum())
    assert ids[0, 0] == 2 and ids[0, n - 1] == 3 and (ids[0, n:] == 0).all() and not att[0, n:].any()
    assert tok.decode([i for i in ids[0].tolist() if i > 4]).strip() == "short"


def test_encode_packed_is_encode_batch_padded_to_max_length():
    tok = train_tokenizer(TEXTS, 300)
    texts = ["short", TEXTS[5] * 10, "Grüße"]
    x = encode_packed(tok, texts, max_length=16)
    ids, att = encode_batch(tok, texts, max_length=16)
    assert x.dtype == torch.int64 and x.shape == (3, 2, 16)
    assert torch.equal(x[:, 0, : ids.shape[1]], ids) and torch.equal(x[:, 1, : att.shape[1]], att)
    short = encode_packed(tok, ["short"], max_length=16)  # the length does not depend on the batch
    n = int(x[0, 1].sum())
    assert short.shape == (1, 2, 16) and torch.equal(short[0], x[0]) and n < 16 and not x[0, :, n:].any()


def test_load_tokenizer_cached_and_only_for_text(tmp_path, tiny_shards):
    from pipeline.config import DataParams
    from pipeline.shards.splits import split_stratified
    from pipeline.shards.splits import make_splits
    from pipeline.modalities.text.sources import TextSet
    from pipeline.modalities.text.codec import write_text_shards

    data = TextSet.from_names(TEXTS[:300], ["x", "y", "z"] * 100)
    params = DataParams(source="fortunes", val_size=30, pretrain_size=None, train_size=None, test_fraction=0.2)
    splits = make_splits(*split_stratified(data, 0.2, 0), params, 0)
    write_text_shards(splits, tmp_path, 100, {}, vocab_size=300, max_length=16)
    tok = load_tokenizer(tmp_path)
    assert load_tokenizer(tmp_path) is tok
    assert tok.to_str() == train_tokenizer(list(splits["pretrain"].texts), 300).to_str()
    with pytest.raises(UserError, match="holds no text shards"):
        load_tokenizer(tiny_shards)
