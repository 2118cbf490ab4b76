"""The standard backbones (torchvision ResNet-18/50, timm ViT-S/16, ViT-B/16) behind the encoder
interface: every image method takes one step on them, and a ViT (ours or timm's) takes crops of
any size its patch size divides (multi-crop), with positions resampled bicubically."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from pipeline.config import EncoderParams, parse_params
from pipeline.errors import UserError
from pipeline.registry import METHODS
from pipeline.modalities.encoders import build_encoder
from pipeline.models.encoder import Encoder
from pipeline.models.vit import ViT
from tests.conftest import random_images

SIZE = 32  # two 16 px patches a side for timm's ViTs; tiny for the ResNets
MANIFEST = {"channels": 1, "image_size": SIZE, "mean": [0.3], "std": [0.35]}
IMAGE_METHODS = [n for n in METHODS.names() if METHODS.get(n).modality == "image"]
# heads shrunk so that one step costs little; the encoder (the thing under test) is not shrunk
SMALL = {"hidden_dim": 32, "projection_dim": 32, "out_dim": 64, "bottleneck_dim": 16, "dim": 32, "num_prototypes": 16,
         "queue_size": 64, "codebook_size": 16, "num_permutations": 10, "tile_dim": 16, "decoder_dim": 32}


@functools.cache
def _encoder(arch: str) -> Encoder:
    """One built encoder per arch, deep-copied by the tests (timm's ViT init costs seconds on 2 cores)."""
    torch.manual_seed(0)
    return build_encoder(EncoderParams(arch=arch), MANIFEST)


def _method(name: str, arch: str, default_params_dict, **extra):
    params = parse_params(default_params_dict)
    cls = METHODS.get(name)
    fields = cls.Params.model_fields
    mp = params.method_params[name].model_copy(update={k: v for k, v in (SMALL | extra).items() if k in fields})
    encoder = copy.deepcopy(_encoder(arch)) if arch != "vit" else \
        build_encoder(params.encoder_for(name).model_copy(update={"arch": arch}), MANIFEST)
    return cls(encoder, mp, params.augment, 0, torch.device("cpu"))


@pytest.mark.parametrize("arch,dim", [("resnet18", 512), ("resnet50", 2048), ("vit_small_patch16_224", 384),
                                      ("vit_base_patch16_224", 768)])
def test_standard_backbone_features(arch, dim):
    # shapes only, on the meta device (no memory, no compute); numbers: the method and export tests
    with torch.device("meta"):
        enc = Encoder(EncoderParams(arch=arch), 1, [0.3], [0.35], SIZE).eval()
        feats = enc(torch.rand(2, 1, SIZE, SIZE))  # grey, repeated to the 3 channels the library models take
    assert feats.shape == (2, dim) and enc.feature_dim == dim


def _one_step(method, images):
    method.train()
    method.prepare(random_images(64, size=SIZE, seed=1))
    out = method(images)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), "no gradient reached the encoder"


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_every_image_method_steps_on_a_standard_backbone(name, default_params_dict, one_thread):
    # a torchvision ResNet-18; a method that says it needs patch tokens (MAE, BEiT, SimMIM, iBOT...) gets timm's ViT-S
    try:
        method = _method(name, "resnet18", default_params_dict)
    except UserError as err:
        assert "needs a ViT encoder" in str(err)
        method = _method(name, "vit_small_patch16_224", default_params_dict, local_crop_size=16, small_crop_size=16)
    _one_step(method, random_images(4, size=SIZE))


@pytest.mark.parametrize("name,crop_key", [("dino", "local_crop_size"), ("swav", "small_crop_size")])
@pytest.mark.parametrize("arch", ["vit_small_patch16_224", "vit"])
def test_multicrop_methods_run_on_a_vit(name, crop_key, arch, default_params_dict, one_thread):
    # timm's ViT-S/16: 32 px globals + 16 px crops (224 + 96 scaled down); ours (patch 4): 12 px crops
    extra = {crop_key: 16} if arch != "vit" else {crop_key: 12}
    method = _method(name, arch, default_params_dict, **extra)
    assert getattr(method.params, crop_key) % method.encoder.backbone.patch_size == 0
    _one_step(method, random_images(4, size=SIZE))


def test_a_crop_the_patch_does_not_divide_is_refused(default_params_dict):
    with pytest.raises(UserError, match=r"^dino.local_crop_size: 12 px does not split into the ViT's 16 px patches"):
        _method("dino", "vit_small_patch16_224", default_params_dict)


def test_standard_vit_needs_an_image_size_its_patch_divides():
    with pytest.raises(UserError, match=r"patch size \(16\) must divide data.image_size \(28\)"):
        Encoder(EncoderParams(arch="vit_small_patch16_224"), 1, [0.3], [0.35], 28)


def test_position_interpolation_at_the_native_size_is_the_identity():
    from timm.layers import resample_abs_pos_embed

    vit = ViT(28, 1, 4, 32, 1, 2, 2.0, pos_embed="learned")
    assert vit.pos_for(7, 7) is vit.pos_embedding
    # and the bicubic resampling itself (forced past timm's size shortcut) returns the table at the same size
    table = vit.pos_embedding.detach()
    forced = resample_abs_pos_embed(table[:, 1:], new_size=(7, 7), old_size=(7, 7), num_prefix_tokens=0)
    grid = torch.nn.functional.interpolate(table[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2), size=(7, 7),
                                           mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 49, -1)
    torch.testing.assert_close(forced, table[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(grid, table[:, 1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch,big,small", [("vit", 28, 12), ("vit_small_patch16_224", 32, 16)])
def test_global_and_local_crops_give_features_of_one_shape(arch, big, small):
    # DINO's 224 and 96 px crops, scaled down; the class token keeps its own position
    enc = Encoder(EncoderParams(arch=arch, dim=32, depth=1, heads=2), 1, [0.3], [0.35], big).eval()
    vit = enc.backbone
    with torch.no_grad():
        g, l = enc(torch.rand(2, 1, big, big)), enc(torch.rand(2, 1, small, small))
        grid = small // vit.patch_size
        table = vit.pos_for(grid, grid)
    assert g.shape == l.shape == (2, enc.feature_dim)
    assert table.shape == (1, 1 + grid * grid, vit.dim)
    torch.testing.assert_close(table[:, 0], vit.pos_for(vit.grid, vit.grid)[:, 0])


def test_resampled_positions_keep_rows_and_columns_apart():
    # a table that varies down the rows only must still vary down the rows only, increasing, at
    # another grid (a transposed or scrambled resample would fail)
    vit = ViT(28, 1, 4, 8, 1, 2, 2.0, pos_embed="learned")
    with torch.no_grad():
        vit.transformer.pos_embedding.zero_()
        vit.transformer.pos_embedding[0, 1:, 0] = torch.arange(7.0).repeat_interleave(7)  # row index
    for grid in (3, 5, 10):
        ramp = vit.pos_for(grid, grid)[0, 1:, 0].reshape(grid, grid)
        torch.testing.assert_close(ramp, ramp[:, :1].expand(-1, grid))  # constant along each row
        assert (ramp[1:, 0] > ramp[:-1, 0]).all()


@pytest.mark.parametrize("arch", ["vit", "vit_small_patch16_224"])
def test_padded_tokens_take_no_part_in_attention(arch):
    # I-JEPA's static-K context: encoding K tokens of which the last are padding must equal encoding the real ones only
    enc = _encoder(arch) if arch != "vit" else Encoder(EncoderParams(arch="vit", dim=32, depth=2, heads=2), 1, [0.3], [0.35], SIZE)
    vit = enc.backbone.eval()
    tokens = torch.randn(2, 3, vit.dim)
    pad = torch.tensor([[False, False, True], [False, False, True]])
    with torch.no_grad():
        torch.testing.assert_close(vit.encode(tokens, pad)[:, :3], vit.encode(tokens[:, :2]), rtol=1e-5, atol=1e-5)
