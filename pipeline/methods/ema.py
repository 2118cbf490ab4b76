"""Momentum / EMA targets shared by MoCo, BYOL and DINO."""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
from torch import nn

from pipeline.methods.base import Method


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: same weights, no gradients (so ``Method.optimized_parameters``,
    which keeps only ``requires_grad`` parameters, never hands it to the optimizer)."""
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
