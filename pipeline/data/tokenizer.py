"""A BPE tokenizer learned with Hugging Face ``tokenizers``, and batch encoding to id tensors."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4, in this order


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE trained on ``texts`` (the caller passes the pretrain split only).

    BPE training is deterministic given the input order (merges tie-break by pair), so the same
    texts give a byte-identical ``to_str()``; there is no seed to set."""
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def encode_batch(tok: Tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids int64 [N, L], attention int64 [N, L])``: ``[CLS] tokens [SEP]`` truncated to
    ``max_length``, right-padded with ``[PAD]`` to the longest row (L <= max_length)."""
    cls, sep, pad = (tok.token_to_id(s) for s in ("[CLS]", "[SEP]", "[PAD]"))
    rows = [[cls] + e.ids[: max_length - 2] + [sep] for e in tok.encode_batch(texts, add_special_tokens=False)]
    L = max(len(r) for r in rows)
    ids = torch.full((len(rows), L), pad, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        att[i, : len(r)] = 1
    return ids, att
