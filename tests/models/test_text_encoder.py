"""The text encoder: packed int64 [N, 2, L] -> features, built from a text manifest, saved and loaded."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.modalities.encoders import build_encoder, encoder_input, load_encoder, save_encoder
from pipeline.modalities.text.encoder import TextEncoder, unpack_text
from pipeline.models.encoder import Encoder

V, L = 60, 16
TEXT = {"modality": "text", "vocab_size": V, "max_length": L}
IMAGE = {"channels": 1, "image_size": 28, "mean": [0.3], "std": [0.35]}


def _packed(lengths: list[int], width: int = L, seed: int = 0) -> torch.Tensor:
    """``[CLS] random ids [SEP]`` rows of the given lengths, right-padded to ``width``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(len(lengths), 2, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, 0, :n] = torch.randint(5, V, (n,), generator=g)
        x[i, 0, 0], x[i, 0, n - 1] = 2, 3
        x[i, 1, :n] = 1
    return x


def _encoder(causal: bool, seed: int = 0) -> TextEncoder:
    torch.manual_seed(seed)
    return build_encoder(EncoderParams(arch="transformer", dim=32, depth=2, heads=4, mlp_ratio=2.0, causal=causal), TEXT).eval()


def test_encoder_input_floats_images_and_passes_text_through():
    from pipeline.modalities.base import modality_named

    images = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    assert torch.equal(modality_named("image").encoder_input(images), torch.tensor([[[[0.0, 1.0]]]]))
    text = _packed([4, 6])
    assert modality_named("text").encoder_input(text) is text
    assert encoder_input(text, _encoder(causal=False)) is text


def test_unpack_trims_padding_beyond_the_longest_row():
    x = _packed([3, 7, 5])
    ids, att = unpack_text(x)
    assert ids.shape == att.shape == (3, 7)
    assert torch.equal(ids, x[:, 0, :7]) and torch.equal(att, x[:, 1, :7])


def test_built_from_a_text_manifest():
    enc = _encoder(causal=True)
    assert isinstance(enc, TextEncoder) and enc.feature_dim == 32 and enc.backbone.causal
    assert enc.backbone.tok.num_embeddings == V and enc.backbone.pos.num_embeddings == L
    assert enc.backbone.blocks.layers[0].linear1.out_features == 64  # encoder.mlp_ratio reaches the blocks
    assert enc(_packed([4, 9, 16])).shape == (3, 32)


@pytest.mark.parametrize("causal", [False, True])
def test_features_do_not_depend_on_padding_or_batch_mates(causal):
    """A row's features are the same alone, next to a longer row (less of it is trimmed),
    with junk ids in its padding, and in a wider packed tensor."""
    enc = _encoder(causal)
    x = _packed([5, 12, 8], width=12)
    together = enc(x)
    alone = torch.cat([enc(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    junk = x.clone()
    junk[:, 0][x[:, 1] == 0] = 17
    torch.testing.assert_close(enc(junk), together, atol=1e-5, rtol=1e-5)
    wider = torch.zeros(3, 2, L, dtype=torch.long)
    wider[..., :12] = x
    torch.testing.assert_close(enc(wider), together, atol=1e-5, rtol=1e-5)


def test_causal_features_are_the_last_real_state_and_bidirectional_the_mean():
    x = _packed([5, 9])
    for causal in (False, True):
        enc = _encoder(causal)
        ids, att = unpack_text(x)
        h = enc.backbone(ids, att)
        want = h[[0, 1], [4, 8]] if causal else torch.stack([h[0, :5].mean(0), h[1, :9].mean(0)])
        torch.testing.assert_close(enc(x), want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_save_load_round_trip(causal, tmp_path):
    enc = _encoder(causal, seed=3)
    save_encoder(enc, tmp_path / "e.pt")
    again = load_encoder(tmp_path / "e.pt")
    assert isinstance(again, TextEncoder) and not again.training
    assert again.params == enc.params and again.vocab_size == V and again.max_length == L and again.backbone.causal == causal
    x = _packed([3, 11, 16, 7])
    assert torch.equal(again(x), enc(x))
    save_encoder(again, tmp_path / "f.pt")  # the same weights, the same bytes (DVC caches downstream)
    assert (tmp_path / "e.pt").read_bytes() == (tmp_path / "f.pt").read_bytes()


def test_image_encoder_blobs_keep_their_keys(tmp_path):
    """Image encoders are saved as before text existed: no text keys, so their bytes do not change."""
    torch.manual_seed(0)
    enc = build_encoder(EncoderParams(), IMAGE)
    assert isinstance(enc, Encoder)
    save_encoder(enc, tmp_path / "e.pt")
    blob = torch.load(tmp_path / "e.pt", weights_only=True)
    assert list(blob) == ["params", "channels", "mean", "std", "image_size", "state_dict"]
    assert "causal" not in blob["params"] and list(blob["params"])[-2:] == ["pos_embed", "pool"]
    assert isinstance(load_encoder(tmp_path / "e.pt"), Encoder)


@pytest.mark.parametrize("arch, manifest", [("transformer", IMAGE), ("resnet", TEXT), ("vit", TEXT)])
def test_an_arch_for_the_other_modality_names_encoder_arch(arch, manifest):
    with pytest.raises(UserError, match="encoder.arch"):
        build_encoder(EncoderParams(arch=arch), manifest)
