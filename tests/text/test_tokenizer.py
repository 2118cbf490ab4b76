import torch

from pipeline.data.tokenizer import SPECIALS, encode_batch, train_tokenizer

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
