"""Text shards: labelled text entries as WebDataset tars, their tokenizer, and how they read
(``TextCodec``, registered as the ``text`` codec).

A sample is ``{__key__, txt: the entry's UTF-8 bytes, cls}`` (pretrain shards carry no
``cls``), written by ``pipeline.shards.write.write_split`` (mtime 0, fixed owner: the bytes
depend only on the entries). ``tokenizer.json`` beside the shards is the BPE tokenizer
trained on the pretrain split's entries only. ``manifest.json`` has the image manifest's
``splits`` layout plus ``"modality": "text"``, ``vocab_size`` (the tokenizer's actual size),
``max_length`` and the tokenizer file's sha256; no image size, channels or pixel stats.
Shards, tokenizer and manifest are byte-identical for the same entries and params.

Reading goes through ``pipeline.shards.read`` (``load_split``, ``stream_batches``), whose
``codec_for`` picks ``TextCodec`` for such a manifest; ``read_texts`` gives the raw entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from pipeline.errors import UserError
from pipeline.modalities.text.sources import TextSet
from pipeline.modalities.text.tokenizer import encode_packed, load_tokenizer, train_tokenizer
from pipeline.registry import CODECS
from pipeline.shards.manifest import modality, read_manifest, write_manifest
from pipeline.shards.read import read_in_order
from pipeline.shards.verify import sha256
from pipeline.shards.write import empty_dir, skipped_files, split_entry, write_split

TOKENIZER = "tokenizer.json"


def write_text_shards(splits: dict[str, TextSet], out_dir: Path, shard_size: int, source: dict,
                      vocab_size: int, max_length: int) -> dict:
    """Write every split (``{split}-NNNNNN.tar``, dataset order), ``tokenizer.json`` (trained on
    ``splits["pretrain"]`` only, ``vocab_size``) and, last, the manifest into ``out_dir``
    (its old files removed); returns the manifest."""
    empty_dir(out_dir)
    tok = train_tokenizer(list(splits["pretrain"].texts), vocab_size)
    (out_dir / TOKENIZER).write_bytes(tok.to_str().encode("utf-8"))
    manifest = {
        "source": source,
        "modality": "text",
        "classes": list(splits["pretrain"].classes),
        "vocab_size": tok.get_vocab_size(),
        "max_length": max_length,
        "tokenizer": {"file": TOKENIZER, "sha256": sha256(out_dir / TOKENIZER)},
        "splits": {},
    }
    for split, data in splits.items():
        samples = ((text.encode("utf-8"), None) for text in data.texts)
        names = write_split(data, out_dir, split, shard_size, with_labels=split != "pretrain", samples=samples,
                            ext="txt")
        manifest["splits"][split] = split_entry(data, split, names, out_dir)
    manifest["skipped_files"] = skipped_files(splits)  # as an image manifest (a text source skips nothing)
    write_manifest(out_dir, manifest)
    return manifest


@dataclass(frozen=True)
class TextCodec:
    """Text samples (``pipeline.shards.read.codec_for``): ``txt`` bytes -> str; a batch is
    ``encode_packed`` with the folder's tokenizer: int64 ``[B, 2, max_length]``."""

    max_length: int
    tok: Tokenizer | None = None  # None: decode only (``read_texts``)

    @classmethod
    def of(cls, shard_dir: str | Path, manifest: dict) -> "TextCodec":
        """The codec of a text shard folder, its tokenizer loaded (and checked) now, so a bad one
        fails before any sample is read."""
        return cls(manifest["max_length"], load_tokenizer(shard_dir))

    def decode(self, sample: dict) -> str:
        return sample["txt"].decode("utf-8")  # strict: bytes that are not UTF-8 are a corrupt shard

    def batch(self, items: list[str]) -> torch.Tensor:
        return encode_packed(self.tok, items, self.max_length)


CODECS.register(TextCodec, "text")


def read_texts(shard_dir: str | Path, split: str) -> tuple[list[str], torch.Tensor]:
    """A text split's raw entries in shard order and their labels int64 ``[N]`` (-1 if none),
    untokenized (e.g. for the TF-IDF baseline)."""
    manifest = read_manifest(shard_dir)
    if modality(manifest) != "text":
        raise UserError(f"{shard_dir} holds image shards, not text; point --shards at a text shard folder")
    texts, labels = read_in_order(shard_dir, split, TextCodec(manifest["max_length"]))
    return texts, torch.tensor(labels, dtype=torch.long)
