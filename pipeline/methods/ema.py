"""Momentum / EMA targets shared by MoCo, BYOL and DINO."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: same weights, no gradients (never handed to the optimizer)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- tau * target + (1 - tau) * online, for parameters and float buffers
    (BatchNorm running statistics follow the online network the same way)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(tau).add_(o.detach(), alpha=1 - tau)
    for t, o in zip(target.buffers(), online.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(tau).add_(o.detach(), alpha=1 - tau)
        else:
            t.copy_(o)


def cosine_tau(base: float, final: float, progress: float) -> float:
    """BYOL's schedule: tau = final - (final - base) * (cos(pi * progress) + 1) / 2, progress in [0, 1]."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2
