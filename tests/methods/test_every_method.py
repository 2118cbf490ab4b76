"""Parametrized over the registry: an image method is tested the moment it registers
(text methods, which take packed token ids, are in test_text_methods.py)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from pipeline.config import parse_params
from pipeline.registry import METHODS as REGISTRY
from pipeline.methods._base import Method
from pipeline.methods.byol import BYOL
from pipeline.methods._ema import MomentumMethod
from pipeline.modalities.encoders import build_encoder
from pipeline.train.optim import param_groups

METHODS = [n for n in REGISTRY.names() if REGISTRY.get(n).modality == "image"]


def test_every_method_is_tested_for_its_modality():
    # image methods here, text methods in test_text_methods.py: none falls through the gap
    assert METHODS and all(REGISTRY.get(n).modality in ("image", "text") for n in REGISTRY.names())


@pytest.fixture(scope="module")
def real_batch(fmnist_small) -> torch.Tensor:
    train, _ = fmnist_small
    return torch.from_numpy(train.images[:64]).permute(0, 3, 1, 2).contiguous()  # uint8 [64, 1, 28, 28]


def _small(params_dict: dict) -> dict:
    """The defaults with narrower encoders (ResNet width 16, ViTs of 2 blocks at 64-d): the same
    code paths, at a fraction of the cost of 40 steps for each of the 26 image methods."""
    small = copy.deepcopy(params_dict)
    small["encoder"]["width"] = 16
    for section in small.values():
        encoder = section.get("encoder") if isinstance(section, dict) else None
        if isinstance(encoder, dict) and encoder.get("arch") == "vit":
            encoder.update(depth=2, dim=64)
    # W-MSE whitens sub-batches of min(batch, whitening_size) = 64 images here: that must exceed
    # the embedding size (the paper: 128 images for 64 dimensions), or the whitened batch is degenerate
    small["wmse"]["projection_dim"] = 16
    return small


def _build(name: str, default_params_dict, seed: int = 0) -> Method:
    params = parse_params(_small(default_params_dict))
    manifest = {"channels": 1, "image_size": 28, "mean": [0.286], "std": [0.353]}
    torch.manual_seed(seed)
    encoder = build_encoder(params.encoder_for(name), manifest)
    method = REGISTRY.get(name)(encoder, params.method_params[name], params.augment, seed, torch.device("cpu"))
    return method


@pytest.mark.parametrize("name", METHODS)
def test_registered_with_params_class(name):
    cls = REGISTRY.get(name)
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


TARGET_PREFIXES = ("target_", "teacher_", "key_")  # BYOL's target, DINO's teacher, MoCo's key network


def _target_modules(method: Method) -> dict[str, torch.nn.Module]:
    """The EMA networks of a method, found by name (not by their flags, which is what is
    under test): declared ``ema_targets`` and any child named like a target network."""
    names = set(getattr(method, "ema_targets", {})) | {n for n, _ in method.named_children() if n.startswith(TARGET_PREFIXES)}
    return {n: getattr(method, n) for n in sorted(names)}


def _assert_targets_move_only_by_ema(method: Method, batch: torch.Tensor) -> None:
    """Build the optimizer as pipeline/train/pretrain.py does, then check by identity that no target
    parameter is in it, and that an optimizer step (with the EMA hook skipped) leaves them."""
    opt = torch.optim.SGD(param_groups(method, params=method.optimized_parameters()), lr=1.0)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert {id(p) for p in method.encoder.parameters()} <= in_opt, "the encoder must be trained"
    targets = _target_modules(method)
    for name, module in targets.items():
        leaked = [n for n, p in module.named_parameters() if id(p) in in_opt]
        assert not leaked, f"{name}: parameters {leaked[:3]} are in the optimizer"
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in targets.items()}
    method.train()
    out = method(batch)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()  # no after_optimizer_step: only the EMA hook may move a target
    for name, module in targets.items():
        for p, b in zip(module.parameters(), before[name]):
            assert p.grad is None, f"{name}: a gradient reached the target network"
            assert torch.equal(p, b), f"{name}: the optimizer step changed the target network"


@pytest.mark.parametrize("name", METHODS)
def test_target_networks_move_only_by_ema(name, default_params_dict, real_batch):
    method = _build(name, default_params_dict)
    method.prepare(real_batch)
    _assert_targets_move_only_by_ema(method, real_batch[:32])
    if isinstance(method, MomentumMethod):  # the names above do find its targets
        assert set(_target_modules(method)) == set(method.ema_targets)


class _UnfrozenTarget(BYOL):
    """BYOL with the classic bug: a deep copy of the online network that still requires
    grad, so the default ``optimized_parameters`` hands it to the optimizer."""

    def make_targets(self) -> None:
        for target, online in self.ema_targets.items():
            setattr(self, target, copy.deepcopy(getattr(self, online)))


def test_an_unfrozen_target_fails_the_check(default_params_dict, real_batch):
    params = parse_params(default_params_dict)
    manifest = {"channels": 1, "image_size": 28, "mean": [0.286], "std": [0.353]}
    torch.manual_seed(0)
    encoder = build_encoder(params.encoder_for("byol"), manifest)
    bad = _UnfrozenTarget(encoder, params.method_params["byol"], params.augment, 0, torch.device("cpu"))
    with pytest.raises(AssertionError, match="in the optimizer"):
        _assert_targets_move_only_by_ema(bad, real_batch[:32])


def test_unknown_method_lists_valid():
    from pipeline.errors import UserError

    with pytest.raises(UserError, match="valid methods are"):
        REGISTRY.get("nope")
