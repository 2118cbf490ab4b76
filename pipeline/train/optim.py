"""Optimizers with the conventions of the SSL literature."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.config import OptimParams
from pipeline.train.lars import LARS


def param_groups(module: nn.Module, lr_mult: float = 1.0, params: list[nn.Parameter] | None = None) -> list[dict]:
    """Split into decayed weights and undecayed biases/norm parameters (1-D tensors),
    as SimCLR/BYOL/MAE do; ``lr_mult`` scales this module's lr (e.g. a finetuned encoder)."""
    chosen = {id(p) for p in (params if params is not None else module.parameters())}
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad and id(p) in chosen:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "lr_mult": lr_mult},
        # LARS leaves biases and norm parameters out of its trust ratio, as the papers do
        {"params": no_decay, "lr_mult": lr_mult, "weight_decay": 0.0, "lars_exclude": True},
    ]


def scaled_lr(base_lr: float, batch_size: int, rule: str, world_size: int = 1) -> float:
    """The lr for a global batch (``batch_size`` per process x ``world_size``) from the lr at batch 256,
    by the scaling rule the recipe's paper uses: ``linear`` lr x B/256 (Goyal et al. 2017, "Accurate,
    Large Minibatch SGD"; SimCLR's and BYOL's LARS, MoCo's and SimSiam's SGD, DINO's and MAE's AdamW),
    ``sqrt`` lr x sqrt(B/256) (SimCLR Appendix B.1: 0.075 x sqrt(B) = 1.2 x sqrt(B/256), better for
    batches up to 2048 and 100-200 epochs)."""
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size * world_size / 256)
    return base_lr * batch_size * world_size / 256  # this order of operations, as before: the same floats


def build_optimizer(groups: list[dict], cfg: OptimParams, world_size: int) -> torch.optim.Optimizer:
    """``cfg.lr`` is the lr for a global batch of 256, scaled by ``cfg.lr_scaling``."""
    lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_scaling, world_size)
    for g in groups:
        g["base_lr"] = lr * g.get("lr_mult", 1.0)
        g["lr"] = g["base_lr"]
        g.setdefault("weight_decay", cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.lars_eta)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
