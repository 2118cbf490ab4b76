"""Batched random views computed on the training device.

torchvision's transforms draw one set of random parameters per call, so augmenting a batch
with per-image randomness means a Python loop per image on the CPU. Here every image gets
its own crop, flip and colour jitter in a few batched tensor ops (affine_grid/grid_sample),
on whatever device the batch lives on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.config import AugmentParams


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` -> float ``[N, C, H, W]`` in [0, 1]."""
    return images.float().div_(255.0)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def random_resized_crop(
    x: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], hflip: float,
    gen: torch.Generator, out_size: int | None = None,
) -> torch.Tensor:
    """Per-image random crop (area fraction in ``scale``, aspect in ``ratio``) + flip.

    x: float ``[N, C, H, W]``; returns ``[N, C, out, out]`` (``out`` defaults to H).
    """
    n, dev = x.shape[0], x.device
    area = _uniform(n, scale[0], scale[1], gen, dev)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen, dev)
    aspect = torch.exp(log_r)
    # crop width/height as fractions of the image side; clamp keeps the crop inside
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(n, generator=gen, device=dev) < hflip, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    size = out_size or x.shape[-1]
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def color_jitter(x: torch.Tensor, cfg: AugmentParams, gen: torch.Generator) -> torch.Tensor:
    """Brightness/contrast (and saturation + random grayscale for RGB), each image its own
    factors, applied to a ``jitter_p`` fraction of the batch. x: float ``[N, C, H, W]``."""
    n, dev = x.shape[0], x.device
    apply = (torch.rand(n, 1, 1, 1, generator=gen, device=dev) < cfg.jitter_p).float()
    b = _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, gen, dev).view(n, 1, 1, 1)
    c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen, dev).view(n, 1, 1, 1)
    y = x * b
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = (y - mean) * c + mean
    if x.shape[1] == 3:
        s = _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, gen, dev).view(n, 1, 1, 1)
        gray = _gray(y)
        y = (y - gray) * s + gray
    y = apply * y + (1 - apply) * x
    if x.shape[1] == 3 and cfg.grayscale_p > 0:
        to_gray = (torch.rand(n, 1, 1, 1, generator=gen, device=dev) < cfg.grayscale_p).float()
        y = to_gray * _gray(y).expand_as(y) + (1 - to_gray) * y
    return y.clamp_(0.0, 1.0)


def _gray(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


class ViewMaker:
    """SimCLR-style views: crop + flip + colour jitter, drawn from a seeded generator."""

    def __init__(self, cfg: AugmentParams, seed: int, device: torch.device):
        self.cfg = cfg
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)

    def __call__(self, images: torch.Tensor, out_size: int | None = None, scale: tuple[float, float] | None = None) -> torch.Tensor:
        """uint8 or float ``[N, C, H, W]`` -> one random view, float ``[N, C, out, out]`` in [0, 1]."""
        x = to_float(images) if images.dtype == torch.uint8 else images
        x = random_resized_crop(x, tuple(scale or self.cfg.crop_scale), tuple(self.cfg.crop_ratio), self.cfg.hflip, self.gen, out_size)
        return color_jitter(x, self.cfg, self.gen)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
