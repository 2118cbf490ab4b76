"""A BPE tokenizer learned with Hugging Face ``tokenizers``, and batch encoding to id tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from pipeline.errors import UserError
from pipeline.shards.manifest import read_manifest, recreate_hint
from pipeline.shards.verify import sha256

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


def encode_packed(tok: Tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """Packed int64 ``[N, 2, max_length]``: ``[:, 0]`` token ids (``[CLS] tokens [SEP]``, truncated,
    right-padded with ``[PAD]``), ``[:, 1]`` attention (1 real, 0 padding). A fixed length, so
    batches and splits concatenate and index like image tensors; encoders trim the padding."""
    ids, att = encode_batch(tok, texts, max_length)
    out = torch.zeros((len(texts), 2, max_length), dtype=torch.long)  # [PAD] is id 0
    out[:, 0, : ids.shape[1]] = ids
    out[:, 1, : att.shape[1]] = att
    return out


_LOADED: dict[tuple[str, str], Tokenizer] = {}


def load_tokenizer(shard_dir: str | Path) -> Tokenizer:
    """The tokenizer a text shard folder was written with (``manifest["tokenizer"]``), its
    sha256 checked against the manifest; loaded once per process."""
    manifest = read_manifest(shard_dir)
    info = manifest.get("tokenizer")
    if manifest.get("modality") != "text" or not info:
        raise UserError(f"{shard_dir} holds no text shards (its manifest names no tokenizer); point --shards at text shards")
    path = Path(shard_dir) / info["file"]
    key = (str(path.resolve()), info["sha256"])
    if key not in _LOADED:
        if not path.is_file() or sha256(path) != info["sha256"]:
            raise UserError(f"{path} is missing or differs from its manifest (sha256); {recreate_hint(manifest)}")
        _LOADED[key] = Tokenizer.from_file(str(path))
    return _LOADED[key]
