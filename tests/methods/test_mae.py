import math

import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams, parse_params
from pipeline.errors import UserError
from pipeline.methods.mae import MAE, mae_loss, normalized_pixel_target, random_masking
from pipeline.models.encoder import Encoder
from pipeline.models.vit import patchify

TINY = EncoderParams(arch="vit", patch_size=4, dim=32, depth=2, heads=2, mlp_ratio=2.0)
SMALL_DECODER = MAE.Params(decoder_dim=16, decoder_depth=1, decoder_heads=2)


def _mae(params=SMALL_DECODER) -> MAE:
    torch.manual_seed(0)
    return MAE(Encoder(TINY, 1, [0.3], [0.3], 28), params, AugmentParams(), 0, torch.device("cpu"))


@pytest.mark.parametrize("length,ratio", [(49, 0.75), (16, 0.75), (64, 0.5), (49, 0.9)])
def test_masking_masks_exactly_the_ratio_per_image(length, ratio):
    gen = torch.Generator().manual_seed(0)
    keep, mask, restore = random_masking(32, length, ratio, gen, torch.device("cpu"))
    n_masked = round(ratio * length)
    assert (mask.sum(1) == n_masked).all()
    assert keep.shape == (32, length - n_masked)
    # the kept indices are exactly the unmasked patches, different per image
    for i in range(32):
        assert set(keep[i].tolist()) == set(torch.nonzero(mask[i] == 0).flatten().tolist())
    assert len({tuple(sorted(k.tolist())) for k in keep}) > 1
    # restore undoes the shuffle: position of each patch in the (kept first) shuffled order
    shuffle = restore.argsort(1)
    assert torch.equal(shuffle[:, : keep.shape[1]], keep)


def naive_normalized_target(patches, eps=1e-6):
    """Per patch, with loops: (x - mean) / sqrt(var + eps), var with the n - 1 denominator."""
    out = torch.empty_like(patches)
    n, length, p = patches.shape
    for i in range(n):
        for l in range(length):
            values = patches[i, l].tolist()
            mean = sum(values) / p
            var = sum((v - mean) ** 2 for v in values) / (p - 1)
            out[i, l] = torch.tensor([(v - mean) / math.sqrt(var + eps) for v in values])
    return out


def test_normalized_pixel_target_matches_naive_loop():
    x = torch.rand(2, 3, 8, 8)
    x[0, :, :4, :4] = 0.5  # a flat patch: zero variance, target 0 (eps keeps it finite)
    patches = patchify(x, 4)
    target = normalized_pixel_target(patches)
    torch.testing.assert_close(target, naive_normalized_target(patches), atol=1e-4, rtol=1e-4)
    assert target[0, 0].abs().max() == 0


def naive_mae_loss(pred, target, mask):
    total, count = 0.0, 0
    for i in range(pred.shape[0]):
        for l in range(pred.shape[1]):
            if mask[i, l]:
                total += sum((a - b) ** 2 for a, b in zip(pred[i, l].tolist(), target[i, l].tolist())) / pred.shape[2]
                count += 1
    return total / count


def test_loss_only_on_masked_patches():
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(4, 16, 12, generator=gen), torch.randn(4, 16, 12, generator=gen)
    _, mask, _ = random_masking(4, 16, 0.75, gen, torch.device("cpu"))
    loss = mae_loss(pred, target, mask)
    assert abs(loss.item() - naive_mae_loss(pred, target, mask)) < 1e-5
    visible = (mask == 0).unsqueeze(-1)
    changed = torch.where(visible, pred + 100 * torch.randn_like(pred), pred)
    assert torch.equal(mae_loss(changed, target, mask), loss)
    changed_masked = torch.where(visible, pred, pred + 1.0)
    assert mae_loss(changed_masked, target, mask) != loss


def test_encoder_sees_only_visible_patches():
    method = _mae()
    lengths = []
    method.encoder.backbone.blocks.register_forward_pre_hook(lambda mod, args: lengths.append(args[0].shape[1]))
    out = method(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
    assert torch.isfinite(out["loss"])
    assert lengths == [1 + 49 - round(0.75 * 49)]  # class token + 12 visible patches


def test_reconstruction_ignores_pixels_of_masked_patches():
    method = _mae().eval()
    vit = method.encoder.backbone
    x = torch.rand(2, 1, 28, 28)
    gen = torch.Generator().manual_seed(0)
    keep, mask, restore = random_masking(2, 49, 0.75, gen, x.device)
    pred = method.decoder(vit.encode_subset(x, keep), restore)
    assert pred.shape == (2, 49, 16)
    patches = patchify(x, 4)
    noisy = torch.where(mask.bool().unsqueeze(-1), torch.rand_like(patches), patches)
    y = noisy.view(2, 7, 7, 4, 4, 1).permute(0, 5, 1, 3, 2, 4).reshape(2, 1, 28, 28)  # un-patchify
    assert torch.equal(patchify(y, 4), noisy)
    torch.testing.assert_close(method.decoder(vit.encode_subset(y, keep), restore), pred)


def test_needs_vit_encoder():
    with pytest.raises(UserError, match=r"encoder: \{arch: vit\}"):
        MAE(Encoder(EncoderParams(width=8), 1, [0.3], [0.3], 28), MAE.Params(), AugmentParams(), 0, torch.device("cpu"))


def test_params_yaml_section_runs_mae_with_paper_recipe(default_params_dict):
    params = parse_params(default_params_dict)
    assert params.method_params["mae"] == MAE.Params()  # params.yaml holds the Params defaults
    enc, opt = params.encoder_for("mae"), params.pretrain_for("mae")
    assert enc.arch == "vit" and 28 % enc.patch_size == 0
    assert (opt.optimizer, opt.betas, opt.weight_decay) == ("adamw", [0.9, 0.95], 0.05)
