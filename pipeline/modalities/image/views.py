"""Batched random views computed on the training device, with torchvision's semantics.

torchvision's transforms draw one set of random parameters per call, so augmenting a batch
with per-image randomness means a Python loop per image on the CPU. Here every image gets
its own crop, flip, colour jitter, grayscale, blur and solarization in a few batched tensor
ops, on whatever device the batch lives on, drawn from one seeded ``torch.Generator``.

The random parameters follow torchvision.transforms.v2 (tests/data/test_augment_recipe.py
compares the distributions and, for given parameters, the outputs):

- crop: ``RandomResizedCrop.make_params`` -- 10 attempts of (area, log-ratio), the first
  integer box that fits, else the central crop with the ratio clamped to the range;
- jitter: ``ColorJitter`` -- brightness, contrast (blend with the grayscale mean),
  saturation, hue, in a random order per image, clamping after each;
- ``RandomGrayscale`` (3 equal channels), ``GaussianBlur`` (sigma in [0.1, 2], reflect
  padding, kernel ~10% of the image side, odd), ``RandomSolarize`` (threshold 0.5).

The crop is resampled bilinearly at the output points only (affine_grid/grid_sample), without
torchvision's antialiasing when shrinking.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.config import AugmentParams

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop
BLUR_SIGMA = (0.1, 2.0)  # SimCLR / BYOL / DINO
SOLARIZE_THRESHOLD = 0.5  # on [0, 1] images (BYOL/DINO: 128 of 255)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
CPU_CHUNK_VALUES = 1 << 19  # colour ops and blur on the CPU: chunks of ~0.5M values (cache-sized)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float ``[N, C, H, W]`` in [0, 1]."""
    return images.float().div_(255.0)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


# ---------------------------------------------------------------------------------- crop


def crop_boxes(
    n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    gen: torch.Generator, device=None,
) -> torch.Tensor:
    """``n`` boxes ``(i, j, h, w)`` (long ``[n, 4]``) drawn like torchvision's
    ``RandomResizedCrop.make_params``: up to 10 (area, log-ratio) candidates, the first whose
    rounded size fits, uniform integer offsets; otherwise the central crop, ratio clamped."""
    area = height * width
    k = CROP_ATTEMPTS
    target = area * _uniform(n * k, scale[0], scale[1], gen, device).view(n, k)
    aspect = torch.exp(_uniform(n * k, math.log(ratio[0]), math.log(ratio[1]), gen, device)).view(n, k)
    # float64 so the rounding matches Python's round(math.sqrt(...)) on float draws
    target, aspect = target.double(), aspect.double()
    ws = torch.round(torch.sqrt(target * aspect)).long()
    hs = torch.round(torch.sqrt(target / aspect)).long()
    fits = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    ok = fits.any(dim=1)
    first = fits.float().argmax(dim=1, keepdim=True)  # the first fitting attempt
    w = ws.gather(1, first).squeeze(1)
    h = hs.gather(1, first).squeeze(1)
    # fallback: whole image, ratio clamped into range (torchvision's central crop)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(height * max(ratio))), height
    else:
        fw, fh = width, height
    w = torch.where(ok, w, torch.full_like(w, fw))
    h = torch.where(ok, h, torch.full_like(h, fh))
    # offsets uniform over the valid integer range (torch.randint(0, H - h + 1))
    u = torch.rand(n, 2, generator=gen, device=device)
    i = torch.floor(u[:, 0] * (height - h + 1)).long().clamp_(max=height - h)
    j = torch.floor(u[:, 1] * (width - w + 1)).long().clamp_(max=width - w)
    i = torch.where(ok, i, (height - h) // 2)
    j = torch.where(ok, j, (width - w) // 2)
    return torch.stack([i, j, h, w], dim=1)


def _axis(start: torch.Tensor, length: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """Normalised sample coordinates ``[N, out]`` of a bilinear resize of ``[start, start +
    length)`` to ``out`` points (align_corners=False), clamped to the crop's own pixels as
    when the crop is cut out first (F.interpolate's edge behaviour)."""
    k = torch.arange(out, device=start.device, dtype=start.dtype) + 0.5
    pix = start.unsqueeze(1) + k * (length / out).unsqueeze(1) - 0.5
    pix = torch.minimum(torch.maximum(pix, start.unsqueeze(1)), (start + length - 1).unsqueeze(1))
    return (2 * pix + 1) / size - 1


def resample_boxes(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, out_size: int) -> torch.Tensor:
    """Bilinear resize (no antialiasing) of each image's box ``(i, j, h, w)`` to ``out_size``
    squared, sampled at the output points only -- torchvision's ``resized_crop(...,
    antialias=False)`` per image; ``flip`` (bool ``[N]``) mirrors horizontally."""
    n, c, height, width = x.shape
    i, j, h, w = boxes.to(x.dtype).unbind(1)
    gx = _axis(j, w, width, out_size)
    gx = torch.where(flip.unsqueeze(1), gx.flip(1), gx)
    gy = _axis(i, h, height, out_size)
    grid = torch.stack([gx.unsqueeze(1).expand(n, out_size, out_size), gy.unsqueeze(2).expand(n, out_size, out_size)], dim=3)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    x: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], hflip: float,
    gen: torch.Generator, out_size: int | None = None,
) -> torch.Tensor:
    """Per-image RandomResizedCrop (torchvision's box sampling) + horizontal flip.

    x: float ``[N, C, H, W]``; returns ``[N, C, out, out]`` (``out`` defaults to H).
    """
    n, dev = x.shape[0], x.device
    boxes = crop_boxes(n, x.shape[-2], x.shape[-1], scale, ratio, gen, dev)
    flip = torch.rand(n, generator=gen, device=dev) < hflip
    return resample_boxes(x, boxes, flip, out_size or x.shape[-1])


# -------------------------------------------------------------------------------- colour


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * x + (1.0 - ratio) * other).clamp_(0.0, 1.0)


def adjust_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate each RGB image's hue by ``hue[n]`` turns (in [-0.5, 0.5]), as torchvision's
    ``adjust_hue`` (RGB -> HSV, shift, -> RGB), without materialising HSV: a hue shift keeps
    each pixel's max and min channel, and channel ``c`` of HSV ``(h, s, v)`` is
    ``v - (v - min) * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n_c + 6h) mod 6``, ``n = 5, 3, 1``.
    x: float ``[N, 3, H, W]`` in [0, 1]."""
    r, g, b = x.unbind(dim=1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # (faster than aminmax over dim 1 on CPU)
    d = maxc - torch.minimum(torch.minimum(r, g), b)
    is_r, is_g = maxc == r, maxc == g  # torchvision's ties: r, then g, then b
    num = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))
    offset = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))
    h6 = num.div_(torch.where(d == 0, 1.0, d)).add_(offset).add_(6.0 * hue.view(-1, 1, 1).to(x.dtype))
    out = torch.empty_like(x)
    for c, n in enumerate((5.0, 3.0, 1.0)):
        k = torch.remainder(h6 + n, 6.0)
        f = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.sub(maxc, f.mul_(d), out=out[:, c])
    return out


def _cpu_chunked(fn, x: torch.Tensor, *per_image: torch.Tensor) -> torch.Tensor:
    """``fn(x, *per_image)`` -- on the CPU in chunks of images of ~CPU_CHUNK_VALUES values,
    so the intermediates stay in cache (about twice as fast at 224x224); the result does not
    depend on the chunking. Elsewhere one call on the whole batch."""
    chunk = max(1, CPU_CHUNK_VALUES // max(1, x[0].numel()))
    if x.device.type != "cpu" or x.shape[0] <= chunk:
        return fn(x, *per_image)
    return torch.cat([fn(x[k:k + chunk], *(a[k:k + chunk] for a in per_image)) for k in range(0, x.shape[0], chunk)])


def apply_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter with given per-image parameters.

    x: float ``[N, C, H, W]`` in [0, 1]; factors: ``[N, 4]`` (brightness, contrast,
    saturation factors and hue shift); order: long ``[N, 4]``, each row a permutation of the
    ops (BRIGHTNESS, CONTRAST, SATURATION, HUE). Saturation and hue skip 1-channel images.
    On the CPU the batch goes in chunks (see ``_cpu_chunked``).
    """
    return _cpu_chunked(_apply_jitter, x, factors, order)


def _apply_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    # Without host syncs: instead of gathering the images of each op by `nonzero` (a sync on
    # CUDA each), every position applies its op to every image at once. Brightness, contrast
    # and saturation are one blend ``clamp(f * x + (1 - f) * other)`` with ``other`` 0, the
    # grayscale mean or the grayscale image (f = 1, other = 0: the image unchanged, exactly);
    # hue is computed for every image and kept where it is the position's op. Per image the
    # arithmetic is the gathered version's, bit for bit.
    y = x
    rgb = x.shape[1] == 3
    for pos in range(4):
        op = order[:, pos].view(-1, 1, 1, 1)
        f = factors.gather(1, order[:, pos:pos + 1]).view(-1, 1, 1, 1)  # the factor of this position's op
        gray = _gray(y) if rgb else y
        other = torch.where(op == CONTRAST, gray.mean(dim=(1, 2, 3), keepdim=True), 0.0)
        if rgb:
            other = torch.where(op == SATURATION, gray, other)
        identity = op == HUE if rgb else op >= SATURATION  # (saturation and hue skip 1-channel images)
        y = _blend(y, other, torch.where(identity, 1.0, f))
        if rgb:
            y = torch.where(op == HUE, adjust_hue(y, f.view(-1)), y)
    return y


def sample_jitter(n: int, cfg: AugmentParams, gen: torch.Generator, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ColorJitter parameters: factors ``[n, 4]`` uniform in [max(0, 1 - s), 1 + s]
    (hue in [-hue, hue]) and a random op order ``[n, 4]`` (a permutation per image)."""
    lows = [max(0.0, 1 - cfg.brightness), max(0.0, 1 - cfg.contrast), max(0.0, 1 - cfg.saturation), -cfg.hue]
    highs = [1 + cfg.brightness, 1 + cfg.contrast, 1 + cfg.saturation, cfg.hue]
    # bounds as Python floats holding float32 values (no host-to-device copy of a bounds tensor):
    # the same float32 arithmetic as `rand * (highs - lows) + lows` on float32 tensors
    lows32 = [float(np.float32(v)) for v in lows]
    spans32 = [float(np.float32(hi) - np.float32(lo)) for lo, hi in zip(lows, highs)]
    r = torch.rand(n, 4, generator=gen, device=device)
    factors = torch.stack([r[:, k] * spans32[k] + lows32[k] for k in range(4)], dim=1)
    order = torch.rand(n, 4, generator=gen, device=device).argsort(dim=1)
    return factors, order


def color_jitter(x: torch.Tensor, cfg: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """RandomApply(ColorJitter, p=jitter_p) then RandomGrayscale(grayscale_p, RGB only),
    each image its own draws. x: float ``[N, C, H, W]`` in [0, 1]. No host syncs: every
    image is jittered and those that did not draw it keep their input (torch.where)."""
    n, dev = x.shape[0], x.device
    apply = torch.rand(n, generator=gen, device=dev) < cfg.jitter_p
    factors, order = sample_jitter(n, cfg, gen, dev)
    y = x.clamp(0.0, 1.0)
    if cfg.jitter_p > 0:
        y = torch.where(apply.view(n, 1, 1, 1), apply_jitter(y, factors, order), y)
    to_gray = torch.rand(n, generator=gen, device=dev) < cfg.grayscale_p
    if x.shape[1] == 3 and cfg.grayscale_p > 0:
        y = torch.where(to_gray.view(n, 1, 1, 1), _gray(y).expand_as(y), y)
    return y


# ------------------------------------------------------------------------ blur, solarize


def blur_kernel_size(size: int) -> int:
    """~10% of the image side, odd (SimCLR; BYOL's 23 at 224); at least 3."""
    return max(3, int(0.1 * size) // 2 * 2 + 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-image separable Gaussian blur (sigma ``[N]``), reflect padding, like
    torchvision's ``gaussian_blur``. x: float ``[N, C, H, W]``."""
    return _cpu_chunked(lambda z, s: _gaussian_blur(z, s, kernel_size), x, sigma)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    n, c, height, width = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).to(x.dtype)).pow(2))
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [N*C, K]
    pad = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, height, width), [pad, pad, pad, pad], mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, height, width)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    return torch.where(x >= threshold, 1.0 - x, x)


def _per_view(p: float | list[float], view: int) -> float:
    if isinstance(p, (int, float)):
        return float(p)
    return float(p[min(view, len(p) - 1)])


class ViewMaker:
    """Views as in SimCLR/BYOL/DINO: crop + flip, colour jitter, grayscale, then blur and
    solarization with per-view probabilities, drawn from a seeded generator."""

    def __init__(self, cfg: AugmentParams, seed: int, device: torch.device):
        self.cfg = cfg
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def __call__(self, images: torch.Tensor, out_size: int | None = None,
                 scale: tuple[float, float] | None = None, view: int = 0) -> torch.Tensor:
        """uint8 or float ``[N, C, H, W]`` -> one random view, float ``[N, C, out, out]`` in
        [0, 1]. ``view`` picks the entry of ``blur_p`` / ``solarize_p`` (the last one beyond).

        Always float32, also inside the training step's autocast region: views are data, not
        compute to downcast (a bf16 blur would not fit back into the float32 batch), and the
        encoder's first layer casts them itself. No host syncs (tests/sync_counter.py)."""
        with torch.autocast(images.device.type, enabled=False):
            return self._view(images, out_size, scale, view)

    def _view(self, images: torch.Tensor, out_size: int | None, scale: tuple[float, float] | None, view: int) -> torch.Tensor:
        cfg, gen = self.cfg, self.gen
        x = to_float(images) if images.dtype == torch.uint8 else images
        x = random_resized_crop(x, tuple(scale or cfg.crop_scale), tuple(cfg.crop_ratio), cfg.hflip, gen, out_size)
        x = color_jitter(x, cfg, gen)
        n, dev = x.shape[0], x.device
        blur_p, sol_p = _per_view(cfg.blur_p, view), _per_view(cfg.solarize_p, view)
        if blur_p > 0:
            blur = torch.rand(n, generator=gen, device=dev) < blur_p
            sigma = _uniform(n, *BLUR_SIGMA, gen, dev)
            # every image blurred, those that did not draw it keep theirs: no host sync
            x = torch.where(blur.view(n, 1, 1, 1), gaussian_blur(x, sigma, blur_kernel_size(x.shape[-1])), x)
        if sol_p > 0:
            sol = torch.rand(n, generator=gen, device=dev) < sol_p
            x = torch.where(sol.view(n, 1, 1, 1), solarize(x), x)
        return x

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
