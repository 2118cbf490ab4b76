"""The text modality: entries as packed int64 ``[N, 2, L]`` (token ids, attention), UTF-8 text in
the shards with their BPE tokenizer, a small Transformer encoder, random-masking views, the
TF-IDF baseline; its data source (fortunes) and transfer set (language ID) are the modules of
``datasets/``."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.modalities.base import FeatureBaseline, Modality
from pipeline.modalities.text import codec  # noqa: F401 - registers the text shard codec (CODECS)
from pipeline.modalities.text.encoder import TextEncoder, text_lengths
from pipeline.modalities.text.views import TextViews
from pipeline.registry import MODALITIES, import_package
from pipeline.modalities.text.params import TextParams, text_params

TEXT_BATCH = 128  # entries per forward pass, of similar lengths (benchmarks/text_features.py)


class TextModality(Modality):
    name = "text"
    noun, nouns, content = "entry", "entries", "text"
    encoder_archs = ("transformer",)
    arch_hint = "'transformer'"
    baseline = FeatureBaseline("tfidf", "TF-IDF (baseline)", "TF-IDF", "TF-IDF features")
    train_in_memory = True  # short entries: batches of similar lengths over the whole epoch
    payload_keys = ("params", "vocab_size", "max_length", "state_dict")
    Params = TextParams  # the text: section

    def write_shards(self, params, train, test, out: str) -> dict:
        from pipeline.modalities.text.sharding import write_shards  # the shard stage's code only

        return write_shards(params, train, test, out)

    def shard_summary(self, manifest: dict, out: str) -> str:
        counts = ", ".join(f"{s} {v['count']}" for s, v in manifest["splits"].items())
        return f"shards: {counts} entries and a {manifest['vocab_size']}-token tokenizer in {out}"

    def build_encoder(self, params: EncoderParams, manifest: dict) -> TextEncoder:
        return TextEncoder(params, manifest["vocab_size"], manifest["max_length"])

    def encoder_payload(self, encoder: TextEncoder) -> dict:
        return {"modality": "text", "params": encoder.params.model_dump(), "vocab_size": encoder.vocab_size,
                "max_length": encoder.max_length, "state_dict": encoder.state_dict()}

    def encoder_from_payload(self, blob: dict) -> TextEncoder:
        return TextEncoder(EncoderParams.model_validate(blob["params"]), blob["vocab_size"], blob["max_length"])

    def check_fits(self, blob: dict, manifest: dict, path: Path, shards, fix: str) -> None:
        if blob["vocab_size"] != manifest["vocab_size"]:
            raise UserError(f"encoder {path} has a {blob['vocab_size']}-token vocabulary but the tokenizer of {shards} has "
                            f"{manifest['vocab_size']}; {fix}")
        if blob["max_length"] < manifest["max_length"]:
            raise UserError(f"encoder {path} reads at most {blob['max_length']} tokens but {shards} holds entries of up to "
                            f"{manifest['max_length']}; {fix}")

    def featurize(self, encoder, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
        # entries sorted by length, so that each forward pass is cut to its own longest entry
        # (unpack_text) and computes few padding positions; features go back in input order
        # (each entry's features do not depend on the others in its batch)
        order = text_lengths(x).argsort(stable=True)
        out = torch.empty(len(x), encoder.feature_dim)
        step = min(batch_size, TEXT_BATCH)
        for i in range(0, len(x), step):
            idx = order[i : i + step]
            out[idx] = encoder(x[idx].to(device)).float().cpu()
        return out

    def describe_data(self, source: str, manifest: dict) -> str:
        return f"`{source}` text entries, BPE vocabulary {manifest['vocab_size']:,}, max {manifest['max_length']} tokens"

    def baseline_featurizer(self, shards: str, params):
        from pipeline.modalities.text.tfidf import tfidf_featurizer  # scikit-learn's text module: only when asked for

        return tfidf_featurizer(shards, text_params(params).tfidf_max_features)

    def baseline_dim(self, manifest: dict, params) -> int:
        return text_params(params).tfidf_max_features  # TF-IDF: at most this many terms

    def views(self, params, augment, seed: int, device: torch.device) -> TextViews:
        """Two independent random maskings at ``text.view_mask_p`` (``augment`` is for images)."""
        return TextViews(text_params(params).view_mask_p, seed, device)

    def views_note(self, params) -> str:
        return f"two independent maskings: each real token -> [MASK] with p = {text_params(params).view_mask_p:g}"

    def sample_lengths(self, x: torch.Tensor) -> torch.Tensor:
        return text_lengths(x)


MODALITIES.register(TextModality())
import_package(f"{__name__}.datasets")  # its data source and transfer set register themselves
