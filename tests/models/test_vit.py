import copy
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import EncoderParams, parse_params
from pipeline.errors import UserError
from pipeline.modalities.encoders import build_encoder, load_encoder, save_encoder
from pipeline.models.encoder import Encoder
from pipeline.models.vit import patchify, sincos_pos_embed

TINY = dict(arch="vit", patch_size=4, dim=32, depth=2, heads=2, mlp_ratio=2.0)


def _vit(channels=1, size=28, **kw) -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderParams(**(TINY | kw)), channels, [0.3] * channels, [0.3] * channels, size).eval()


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_vit_shapes(channels, size):
    enc = _vit(channels, size)
    vit = enc.backbone
    x = torch.rand(3, channels, size, size)
    grid = size // 4
    assert vit.grid == grid and vit.num_patches == grid * grid
    assert vit.embed(x).shape == (3, grid * grid, 32)
    assert vit.tokens(x).shape == (3, 1 + grid * grid, 32)
    assert vit.pos_embedding.shape == (1, 1 + grid * grid, 32)
    assert enc(x).shape == (3, 32) and enc.feature_dim == 32
    assert _vit(channels, size, pool="cls")(x).shape == (3, 32)


def test_pooling_is_mean_of_patch_tokens_or_class_token():
    x = torch.rand(2, 1, 28, 28)
    mean_enc, cls_enc = _vit(pool="mean"), _vit(pool="cls")
    h = mean_enc.backbone.tokens(mean_enc.normalise(x))
    torch.testing.assert_close(mean_enc(x), h[:, 1:].mean(1))
    torch.testing.assert_close(cls_enc(x), h[:, 0])  # same seed -> same weights


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_encode_subset_of_all_tokens_equals_full_forward(pos_embed):
    enc = _vit(pos_embed=pos_embed)
    vit = enc.backbone
    if pos_embed == "learned":  # learned table (normal, std 0.02), trained
        assert isinstance(vit.pos_embedding, torch.nn.Parameter)
    else:
        assert "backbone.transformer.pos_embedding" in dict(enc.named_buffers())
    x = enc.normalise(torch.rand(4, 1, 28, 28))
    full = vit.tokens(x)  # the whole-image path
    perm = torch.stack([torch.randperm(49) for _ in range(4)])  # every token, shuffled per image
    sub = vit.encode_subset(x, perm)
    unshuffled = torch.gather(sub[:, 1:], 1, perm.argsort(1).unsqueeze(-1).expand(-1, -1, 32))
    torch.testing.assert_close(sub[:, 0], full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unshuffled, full[:, 1:], atol=1e-5, rtol=1e-5)


def test_encode_subset_only_sees_its_patches():
    enc = _vit()
    vit = enc.backbone
    x = torch.rand(2, 1, 28, 28)
    keep = torch.tensor([[0, 5, 48], [10, 11, 12]])
    h = vit.encode_subset(x, keep)
    assert h.shape == (2, 4, 32)
    y = x.clone()
    y[:, :, 8:16, 8:16] = 0  # patches 16, 17, 23, 24: none of them kept
    torch.testing.assert_close(vit.encode_subset(y, keep), h)


def test_patchify_order_matches_patch_embedding():
    """Token l of patch_embed must be patch l of patchify (MAE's targets align with tokens)."""
    vit = _vit(channels=3, size=16).backbone
    x = torch.rand(2, 3, 16, 16)
    patches = patchify(x, 4)  # [2, 16, 48]
    assert patches.shape == (2, 16, 48)
    for l in range(16):
        i, j = divmod(l, 4)
        naive = x[:, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].permute(0, 2, 3, 1).reshape(2, 48)
        torch.testing.assert_close(patches[:, l], naive)
    w, b = vit.patch_embed.weight, vit.patch_embed.bias  # [D, C, p, p]
    linear = patches @ w.permute(0, 2, 3, 1).reshape(32, 48).T + b
    torch.testing.assert_close(vit.embed(x), linear, atol=1e-5, rtol=1e-5)


def test_sincos_positions():
    pe = sincos_pos_embed(7, 32)
    assert pe.shape == (1, 50, 32) and pe[0, 0].abs().sum() == 0 and pe.abs().max() <= 1
    assert len({tuple(r.tolist()) for r in pe[0, 1:].round(decimals=5)}) == 49  # every patch its own position


def test_vit_save_load_roundtrip(tmp_path):
    enc = _vit(channels=3, size=32, pos_embed="learned")
    x = torch.rand(4, 3, 32, 32)
    save_encoder(enc, tmp_path / "vit.pt")
    again = load_encoder(tmp_path / "vit.pt")
    assert again.params.arch == "vit" and again.image_size == 32 and again.channels == 3
    torch.testing.assert_close(enc(x), again(x))


def test_resnet_blob_without_image_size_still_loads(tmp_path):
    """Encoders saved before the ViT arch (no image_size, no vit keys) keep loading."""
    enc = Encoder(EncoderParams(width=8), 1, [0.5], [0.25]).eval()
    save_encoder(enc, tmp_path / "e.pt")
    blob = torch.load(tmp_path / "e.pt", weights_only=True)
    del blob["image_size"]
    blob["params"] = {k: blob["params"][k] for k in ("arch", "layers", "width", "stem_stride")}
    torch.save(blob, tmp_path / "old.pt")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(load_encoder(tmp_path / "old.pt")(x), enc(x))


def test_build_encoder_checks_patch_size_divides_image_size():
    manifest = {"channels": 1, "image_size": 30, "mean": [0.3], "std": [0.3]}
    with pytest.raises(UserError, match=r"encoder\.patch_size \(4\).*data\.image_size \(30\)"):
        build_encoder(EncoderParams(**TINY), manifest)
    assert build_encoder(EncoderParams(**(TINY | {"patch_size": 5})), manifest).backbone.num_patches == 36


def test_vit_dims_validated_with_key_names(default_params_dict):
    raw = copy.deepcopy(default_params_dict)
    raw["encoder"] = TINY | {"dim": 30, "heads": 4}
    with pytest.raises(UserError, match=r"encoder\.dim \(30\).*encoder\.heads \(4\)"):
        parse_params(raw)
    raw["encoder"] = TINY | {"dim": 34, "heads": 2}
    with pytest.raises(UserError, match="pos_embed"):
        parse_params(raw)
    raw["encoder"] = TINY | {"arch": "vitt"}
    with pytest.raises(UserError, match="encoder.arch"):
        parse_params(raw)


def test_sincos_positions_match_the_formula():
    """Naive MAE formula: patch (i, j), channel k < D/4 of each half: row half sin/cos(i * w_k),
    column half sin/cos(j * w_k), w_k = 1 / 10000^(k / (D/4)); the class token's row is zero."""
    grid, dim = 5, 16
    pe = sincos_pos_embed(grid, dim)[0]
    q = dim // 4
    for l in range(grid * grid):
        i, j = divmod(l, grid)
        want = []
        for coord in (i, j):
            want += [math.sin(coord / 10000 ** (k / q)) for k in range(q)]
            want += [math.cos(coord / 10000 ** (k / q)) for k in range(q)]
        torch.testing.assert_close(pe[1 + l], torch.tensor(want), atol=1e-6, rtol=0)
    assert pe[0].abs().sum() == 0


def test_forward_matches_a_naive_pre_norm_vit():
    """The whole forward against a re-statement of the ViT equations with the module's own
    weights: x + MHA(LN1(x)), x + W2 GELU(W1 LN2(x)), final LN, mean of patch tokens."""
    enc = _vit(pos_embed="learned")
    vit = enc.backbone
    x = torch.rand(2, 1, 28, 28)
    h = torch.cat([vit.class_token.expand(2, -1, -1), patchify(x, 4) @ vit.patch_embed.weight.permute(0, 2, 3, 1).reshape(32, -1).T
                   + vit.patch_embed.bias], dim=1) + vit.pos_embedding
    for blk in vit.blocks:
        a = blk.self_attn
        y = F.layer_norm(h, (32,), blk.norm1.weight, blk.norm1.bias, 1e-6)
        q, k, v = (y @ a.in_proj_weight.T + a.in_proj_bias).chunk(3, dim=-1)
        split = lambda t: t.reshape(2, -1, 2, 16).transpose(1, 2)  # [N, heads, T, 16]
        att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / 4.0, dim=-1) @ split(v)
        h = h + a.out_proj(att.transpose(1, 2).reshape(2, -1, 32))
        y = F.layer_norm(h, (32,), blk.norm2.weight, blk.norm2.bias, 1e-6)
        h = h + blk.linear2(F.gelu(blk.linear1(y)))
    h = F.layer_norm(h, (32,), vit.transformer.ln.weight, vit.transformer.ln.bias, 1e-6)
    torch.testing.assert_close(vit(x), h[:, 1:].mean(1), atol=1e-5, rtol=1e-5)


def test_gradient_reaches_every_trainable_parameter():
    enc = _vit(pos_embed="learned").train()
    enc(torch.rand(4, 1, 28, 28)).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_as_mae():
    vit = _vit(dim=64, depth=1, heads=2, pos_embed="learned").backbone
    blk = vit.blocks[0]
    bound = math.sqrt(6 / (64 + 3 * 64))  # xavier-uniform of the fused [3D, D] q/k/v projection
    assert blk.self_attn.in_proj_weight.abs().max() <= bound and blk.self_attn.in_proj_weight.abs().max() > 0.9 * bound
    assert blk.linear1.weight.abs().max() <= math.sqrt(6 / (64 + 128)) and blk.linear1.bias.abs().sum() == 0
    assert 0.015 < vit.class_token.std() < 0.025 and 0.015 < vit.pos_embedding.std() < 0.025
