"""What SimMIM, iBOT, DINOv2-style, I-JEPA and MSN share: an exact resume of their extra state
(centres, prototypes, EMA teacher, progress, mask and block RNGs), bf16 autocast, and a clear
error on a ResNet encoder."""

from __future__ import annotations

import io
import math

import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.errors import UserError
from pipeline.registry import METHODS
from pipeline.models.encoder import Encoder
from pipeline.train.optim import param_groups
from tests.methods.vit_common import TINY, tiny_method

VIT_METHODS = sorted(TINY)


def _images(seed: int) -> torch.Tensor:
    return torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _step(method, opt, images, progress) -> torch.Tensor:
    out = method(images)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    method.after_optimizer_step(progress)
    return out["loss"].detach()


def _opt(method):
    return torch.optim.AdamW(param_groups(method, params=method.optimized_parameters()), lr=1e-3)


@pytest.mark.parametrize("name", VIT_METHODS)
def test_resume_is_exact(name, one_thread):
    method = tiny_method(name)
    opt = _opt(method)
    _step(method, opt, _images(1), 0.25)
    buf = io.BytesIO()  # what the checkpoint holds, through the same weights_only load
    torch.save({"model": method.state_dict(), "opt": opt.state_dict(), "extra": method.extra_state()}, buf)
    expected = [_step(method, opt, _images(s), p) for s, p in ((2, 0.5), (3, 0.75))]

    resumed = tiny_method(name, seed=7)  # other initial weights and RNG: everything must come from the checkpoint
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed.load_state_dict(state["model"])
    resumed.load_extra_state(state["extra"])
    opt2 = _opt(resumed)
    opt2.load_state_dict(state["opt"])
    got = [_step(resumed, opt2, _images(s), p) for s, p in ((2, 0.5), (3, 0.75))]
    assert torch.equal(torch.stack(got), torch.stack(expected))
    for (k, a), b in zip(method.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k  # teacher, centres, prototypes, progress


@pytest.mark.parametrize("name", VIT_METHODS)
def test_bf16_autocast_gives_a_finite_loss_and_gradient(name, one_thread):
    method = tiny_method(name)
    with torch.autocast("cpu", torch.bfloat16):
        out = method(_images(4))
    assert out["loss"].dtype == torch.float32 and math.isfinite(out["loss"].item())
    out["loss"].backward()
    grads = [p.grad for p in method.encoder.parameters() if p.grad is not None]
    assert grads and all(g.isfinite().all() for g in grads)


@pytest.mark.parametrize("name", VIT_METHODS)
def test_a_resnet_encoder_is_a_user_error(name):
    encoder = Encoder(EncoderParams(arch="resnet", width=8), 1, [0.286], [0.353], 28)
    cls = METHODS.get(name)
    with pytest.raises(UserError, match=rf"^{name} needs a ViT encoder.*`encoder: {{arch: vit}}` under `{name}:`"):
        cls(encoder, cls.Params(**TINY[name]), AugmentParams(), 0, torch.device("cpu"))


@pytest.mark.parametrize("name,key,size_key", [("ibot", "num_local_crops", "local_crop_size"),
                                               ("dinov2", "num_local_crops", "local_crop_size"),
                                               ("msn", "num_focal_views", "focal_crop_size")])
def test_small_crops_run_on_interpolated_positions(name, key, size_key, one_thread):
    # 14 px crops of 28 px images on 7 px patches: a 2x2 grid, its positions resampled from the 4x4 table
    method = tiny_method(name, **{key: 2, size_key: 14})
    out = method(_images(5))
    out["loss"].backward()
    assert math.isfinite(out["loss"].item())
    # a size the patch size does not divide is refused early, naming the key
    with pytest.raises(UserError, match=rf"^{name}.{size_key}: 12 px does not split into the ViT's 7 px patches"):
        tiny_method(name, **{key: 2})
