"""The batched views follow torchvision.transforms.v2's recipe: the crop boxes have the same
distribution as ``RandomResizedCrop.make_params`` (rejection sampling + fallback), and for
given parameters the colour jitter (random order), blur and solarization equal torchvision's
functionals applied image by image."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from scipy.stats import chisquare, ks_2samp, kstest

from pipeline.config import AugmentParams
from pipeline.modalities.image import views as augment
from pipeline.modalities.image.views import (
    BRIGHTNESS, CONTRAST, HUE, SATURATION, ViewMaker, apply_jitter, blur_kernel_size, color_jitter,
    crop_boxes, gaussian_blur, resample_boxes, sample_jitter, solarize,
)

DRAWS = 20_000


def _torchvision_boxes(n, height, width, scale, ratio, seed):
    torch.manual_seed(seed)
    t = T.RandomResizedCrop(8, scale=scale, ratio=ratio)
    img = torch.zeros(1, height, width)
    out = []
    for _ in range(n):
        p = t.make_params([img])
        out.append((p["top"], p["left"], p["height"], p["width"]))
    return np.array(out, dtype=np.float64)


def _fallback(height, width, ratio):
    """The central crop torchvision falls back to (independently re-derived)."""
    r = width / height
    lo, hi = min(ratio), max(ratio)
    w, h = (width, round(width / lo)) if r < lo else (round(height * hi), height) if r > hi else (width, height)
    return ((height - h) // 2, (width - w) // 2, h, w)


@pytest.mark.parametrize("height,width,scale,ratio", [
    (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),
    (224, 160, (0.08, 1.0), (3 / 4, 4 / 3)),
    (32, 32, (0.6, 1.0), (0.5, 2.0)),       # most candidates overflow: rejection matters
    (20, 40, (0.7, 1.0), (3 / 4, 4 / 3)),   # frequent fallback, ratio clamped to 4/3
])
def test_crop_box_distribution_matches_torchvision(height, width, scale, ratio):
    g = torch.Generator().manual_seed(0)
    ours = crop_boxes(DRAWS, height, width, scale, ratio, g).double().numpy()
    ref = _torchvision_boxes(DRAWS, height, width, scale, ratio, seed=1)
    for boxes in (ours, ref):  # every box inside the image
        i, j, h, w = boxes.T
        assert (i >= 0).all() and (j >= 0).all() and (i + h <= height).all() and (j + w <= width).all()
        assert (h > 0).all() and (w > 0).all()

    def stats(b):
        i, j, h, w = b.T
        return {
            "area": h * w / (height * width),
            "log_ratio": np.log(w / h),
            "top": (i + 0.5) / (height - h + 1),   # offsets, relative to their range
            "left": (j + 0.5) / (width - w + 1),
        }
    so, sr = stats(ours), stats(ref)
    for key in so:
        p = ks_2samp(so[key], sr[key]).pvalue
        assert p > 1e-3, (key, p, np.quantile(so[key], [0.1, 0.5, 0.9]), np.quantile(sr[key], [0.1, 0.5, 0.9]))
    fb = np.array(_fallback(height, width, ratio))
    rate_o, rate_r = (ours == fb).all(1).mean(), (ref == fb).all(1).mean()
    tol = 5 * math.sqrt(max(rate_r, 1 / DRAWS) * (1 - rate_r) / DRAWS * 2) + 1e-4
    assert abs(rate_o - rate_r) <= tol, (rate_o, rate_r)


def test_fallback_box_is_torchvisions():
    # every candidate is wider than the image: all 10 attempts fail
    for (height, width, ratio) in [(32, 32, (2.0, 3.0)), (20, 40, (2.5, 3.0)), (40, 20, (0.2, 0.3))]:
        ours = crop_boxes(50, height, width, (1.0, 1.0), ratio, torch.Generator().manual_seed(0))
        ref = _torchvision_boxes(50, height, width, (1.0, 1.0), ratio, seed=0)
        assert (ours.numpy() == ref).all(), (ours[0], ref[0])


def test_resample_equals_torchvision_resized_crop():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 3, 40, 30, generator=g)
    boxes = crop_boxes(16, 40, 30, (0.08, 1.0), (3 / 4, 4 / 3), g)
    flip = torch.arange(16) % 2 == 1
    out = resample_boxes(x, boxes, flip, 24)
    for k in range(16):
        i, j, h, w = boxes[k].tolist()
        ref = TF.resized_crop(x[k], i, j, h, w, [24, 24], antialias=False)
        ref = TF.horizontal_flip(ref) if flip[k] else ref
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)


def _tv_jitter(img, factors, order):
    fns = {BRIGHTNESS: TF.adjust_brightness, CONTRAST: TF.adjust_contrast,
           SATURATION: TF.adjust_saturation, HUE: TF.adjust_hue}
    for op in order.tolist():
        img = fns[op](img, float(factors[op]))
    return img


@pytest.mark.parametrize("chunk_values", [None, 1000])  # 1000: the CPU path in chunks of 2-8 images
@pytest.mark.parametrize("channels", [3, 1])
def test_jitter_equals_torchvision_functionals_in_order(channels, chunk_values, monkeypatch):
    if chunk_values:
        monkeypatch.setattr(augment, "CPU_CHUNK_VALUES", chunk_values)
    g = torch.Generator().manual_seed(0)
    n = 96
    x = torch.rand(n, channels, 12, 10, generator=g)
    x[:8] = x[:8, :1]  # some gray images (hue/saturation degenerate cases)
    x[8:16] = (x[8:16] * 4).round() / 4  # ties between channels
    cfg = AugmentParams(brightness=0.8, contrast=0.8, saturation=0.8, hue=0.5)
    factors, order = sample_jitter(n, cfg, g)
    out = apply_jitter(x, factors, order)
    for k in range(n):
        ref = _tv_jitter(x[k], factors[k], order[k])
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=0)


def test_jitter_parameter_distribution():
    cfg = AugmentParams(brightness=0.4, contrast=0.6, saturation=1.0, hue=0.1)
    factors, order = sample_jitter(DRAWS, cfg, torch.Generator().manual_seed(0))
    ranges = [(0.6, 1.4), (0.4, 1.6), (0.0, 2.0), (-0.1, 0.1)]
    for col, (lo, hi) in enumerate(ranges):
        f = factors[:, col].double().numpy()
        assert f.min() >= lo and f.max() <= hi
        assert kstest(f, "uniform", args=(lo, hi - lo)).pvalue > 1e-3
    # each of the 24 orders equally likely, and every row a permutation
    assert (order.sort(dim=1).values == torch.arange(4)).all()
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)
    counts = counts[counts > 0].numpy()
    assert len(counts) == 24 and chisquare(counts).pvalue > 1e-3


def test_jitter_and_grayscale_rates():
    x = torch.rand(4000, 3, 4, 4)
    cfg = AugmentParams(jitter_p=0.8, grayscale_p=0.2)
    y = color_jitter(x, cfg, torch.Generator().manual_seed(0))
    gray = (y[:, 0] == y[:, 1]).all((1, 2)) & (y[:, 1] == y[:, 2]).all((1, 2))
    assert abs(gray.float().mean() - 0.2) < 0.03
    changed = ~torch.isclose(y, x, atol=1e-6).flatten(1).all(1)
    assert abs(changed[~gray].float().mean() - 0.8) < 0.03
    y1 = color_jitter(x[:, :1], cfg, torch.Generator().manual_seed(0))  # 1 channel: no gray/sat/hue
    assert y1.shape == (4000, 1, 4, 4) and y1.min() >= 0 and y1.max() <= 1


@pytest.mark.parametrize("size,chunk_values", [(28, None), (64, None), (64, 30_000)])  # 30k: chunks of 2
def test_blur_equals_torchvision(size, chunk_values, monkeypatch):
    if chunk_values:
        monkeypatch.setattr(augment, "CPU_CHUNK_VALUES", chunk_values)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, size, size, generator=g)
    sigma = torch.rand(6, generator=g) * 1.9 + 0.1
    k = blur_kernel_size(size)
    assert k % 2 == 1 and k == max(3, int(0.1 * size) // 2 * 2 + 1)
    out = gaussian_blur(x, sigma, k)
    for n in range(6):
        s = float(sigma[n])
        torch.testing.assert_close(out[n], TF.gaussian_blur(x[n], [k, k], [s, s]), atol=1e-5, rtol=0)
    assert blur_kernel_size(224) == 23  # BYOL's kernel at 224


def test_solarize_equals_torchvision():
    x = torch.rand(4, 3, 8, 8)
    x[0, 0, 0, :2] = torch.tensor([0.5, 0.25])  # on the threshold: inverted (>=)
    torch.testing.assert_close(solarize(x), TF.solarize(x, 0.5), atol=0, rtol=0)
    torch.testing.assert_close(solarize(x, 0.25), TF.solarize(x, 0.25), atol=0, rtol=0)


def _identity_cfg(**kw):
    return AugmentParams(crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], hflip=0.0, jitter_p=0.0, grayscale_p=0.0, **kw)


def test_view_index_picks_blur_and_solarize_probability():
    x = torch.rand(8, 3, 28, 28)
    vm = ViewMaker(_identity_cfg(blur_p=[1.0, 0.0], solarize_p=[0.0, 1.0]), 0, torch.device("cpu"))
    v0, v1, v5 = vm(x), vm(x, view=1), vm(x, view=5)
    assert not torch.allclose(v0, x, atol=1e-3)  # blurred
    assert (v0.flatten(1).std(1) < x.flatten(1).std(1)).all()
    torch.testing.assert_close(v1, solarize(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(v5, solarize(x), atol=1e-5, rtol=0)  # beyond the list: last entry


def test_blur_and_solarize_rates():
    x = torch.rand(2000, 1, 28, 28)
    vm = ViewMaker(_identity_cfg(blur_p=[0.3], solarize_p=[0.2]), 0, torch.device("cpu"))
    v = vm(x)
    sol = (v > 0.5 + 1e-6).flatten(1).float().mean(1) < 0.05  # solarized: nothing above 0.5 survives
    assert abs(sol.float().mean() - 0.2) < 0.03
    rough = ~sol & ~torch.isclose(v, x, atol=1e-5).flatten(1).all(1)
    assert abs(rough.float().mean() / (1 - sol.float().mean()) - 0.3) < 0.04


def test_defaults_keep_the_fashion_mnist_views():
    cfg = AugmentParams()
    assert cfg.blur_p == [0.0] and cfg.solarize_p == [0.0] and cfg.hue == 0.1
    x = (torch.rand(32, 1, 28, 28) * 255).to(torch.uint8)
    v = ViewMaker(cfg, 0, torch.device("cpu"))(x)
    assert v.shape == (32, 1, 28, 28) and v.min() >= 0 and v.max() <= 1
