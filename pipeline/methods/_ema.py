"""Momentum / EMA targets shared by MoCo, BYOL and DINO."""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
from torch import nn

from pipeline.methods._base import Method


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: same weights, no gradients (so ``Method.optimized_parameters``,
    which keeps only ``requires_grad`` parameters, never hands it to the optimizer)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, tau: float, foreach: bool = True) -> None:
    """target <- tau * target + (1 - tau) * online, for parameters and float buffers
    (BatchNorm running statistics follow the online network the same way); other buffers
    (BatchNorm's step counts) are copied. ``foreach``: torch's multi-tensor ops, a few
    kernel launches for the whole network instead of two per tensor (same values)."""
    targets = list(target.parameters()) + list(target.buffers())
    onlines = list(online.parameters()) + list(online.buffers())
    floats = [(t, o) for t, o in zip(targets, onlines) if t.dtype.is_floating_point]  # (no_grad: nothing recorded)
    others = [(t, o) for t, o in zip(targets, onlines) if not t.dtype.is_floating_point]
    if foreach and floats:
        ts, os_ = [t for t, _ in floats], [o for _, o in floats]
        torch._foreach_mul_(ts, tau)
        torch._foreach_add_(ts, os_, alpha=1 - tau)
    else:
        for t, o in floats:
            t.mul_(tau).add_(o, alpha=1 - tau)
    if foreach and others:
        torch._foreach_copy_([t for t, _ in others], [o for _, o in others])
    else:
        for t, o in others:
            t.copy_(o)


def cosine_tau(base: float, final: float, progress: float) -> float:
    """BYOL's schedule: tau = final - (final - base) * (cos(pi * progress) + 1) / 2, progress in [0, 1]."""
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


class MomentumMethod(Method):
    """A method with EMA copies of some of its online modules (BYOL's target, MoCo's key
    encoder, DINO's teacher).

    ``ema_targets`` maps each target attribute to the online attribute it follows; a subclass
    builds its online modules, calls ``make_targets()``, and defines ``momentum(progress)``.
    After every optimizer step each target moves by ``ema_update`` with that momentum.
    """

    ema_targets: ClassVar[dict[str, str]]

    def make_targets(self) -> None:
        # in the order of ema_targets, so parameters() and state_dict keys keep a fixed order
        for target, online in self.ema_targets.items():
            setattr(self, target, frozen_copy(getattr(self, online)))

    def momentum(self, progress: float) -> float:
        """The EMA momentum tau after the optimizer step at ``progress`` (0..1)."""
        raise NotImplementedError

    def after_optimizer_step(self, progress: float) -> None:
        tau = self.momentum(progress)
        for target, online in self.ema_targets.items():
            ema_update(getattr(self, target), getattr(self, online), tau)
