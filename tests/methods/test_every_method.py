"""Parametrized over the registry: a method is tested the moment it registers."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.config import parse_params
from pipeline.methods import registry
from pipeline.methods.base import Method
from pipeline.models.encoder import build_encoder
from pipeline.train.optim import param_groups

METHODS = registry.names()


@pytest.fixture(scope="module")
def real_batch(fmnist_small) -> torch.Tensor:
    train, _ = fmnist_small
    return torch.from_numpy(train.images[:64]).permute(0, 3, 1, 2).contiguous()  # uint8 [64, 1, 28, 28]


def _build(name: str, default_params_dict, seed: int = 0) -> Method:
    params = parse_params(default_params_dict)
    manifest = {"channels": 1, "image_size": 28, "mean": [0.286], "std": [0.353]}
    torch.manual_seed(seed)
    encoder = build_encoder(params.encoder_for(name), manifest)
    method = registry.get(name)(encoder, params.method_params[name], params.augment, seed, torch.device("cpu"))
    return method


@pytest.mark.parametrize("name", METHODS)
def test_registered_with_params_class(name):
    cls = registry.get(name)
    assert issubclass(cls, Method) and cls.name == name
    cls.Params()  # every hyperparameter has the paper's default


@pytest.mark.parametrize("name", METHODS)
def test_trains_with_finite_decreasing_loss(name, default_params_dict, real_batch):
    method = _build(name, default_params_dict)
    method.prepare(real_batch)
    opt = torch.optim.AdamW(param_groups(method, params=method.optimized_parameters()), lr=1e-3)
    losses = []
    steps = 40  # a 1000-way jigsaw classifier needs more than 24 steps to move off log(1000)
    for step in range(steps):
        method.train()
        out = method(real_batch)
        assert set(out) >= {"loss"} and out["loss"].ndim == 0
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        method.after_optimizer_step((step + 1) / steps)
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
    feats = method.encoder.eval()(real_batch[:8].float() / 255)
    assert feats.shape == (8, method.encoder.feature_dim)


@pytest.mark.parametrize("name", METHODS)
def test_optimizer_sees_no_target_network(name, default_params_dict):
    method = _build(name, default_params_dict)
    optimized = {id(p) for p in method.optimized_parameters()}
    assert all(p.requires_grad for p in method.optimized_parameters())
    assert {id(p) for p in method.encoder.parameters()} <= optimized


def test_unknown_method_lists_valid():
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="valid methods are"):
        registry.get("nope")
