"""Multi-tensor (``torch._foreach_*``) LARS and EMA equal their per-tensor loops, and their
number of torch calls per step does not grow with the number of tensors (the CPU proxy for
kernel launches on a GPU)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pipeline.methods._ema import ema_update
from pipeline.train.lars import LARS
from pipeline.train.optim import param_groups


class _Calls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") != "__get__":  # attribute reads (p.grad) launch nothing
            self.count += 1
        return func(*args, **(kwargs or {}))


def _net(blocks: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 4, 3)]
    for _ in range(blocks):
        layers += [nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1)]
    net = nn.Sequential(*layers)
    nn.init.zeros_(layers[-1].weight)  # a zero weight: the trust ratio's guard
    return net


def _grads(net: nn.Module, seed: int) -> None:
    net.zero_grad(set_to_none=True)
    net(torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed))).square().mean().backward()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_foreach_lars_equals_the_per_tensor_loop(weight_decay):
    nets = [_net(3), _net(3)]
    nets[0][0].bias.requires_grad_(False)  # a tensor with no gradient is skipped
    nets[1][0].bias.requires_grad_(False)
    opts = [LARS(param_groups(n), lr=0.5, momentum=0.9, weight_decay=weight_decay, eta=0.02, foreach=f)
            for n, f in zip(nets, (True, False))]
    for step in range(3):
        for net, opt in zip(nets, opts):
            _grads(net, seed=step)
            opt.step()
    for (name, a), b in zip(nets[0].named_parameters(), nets[1].parameters()):
        assert torch.equal(a, b), name
    weights = [(a, b) for a, b in zip(nets[0].parameters(), _net(3).parameters()) if a.ndim > 1]
    assert all(not torch.equal(a, b) for a, b in weights)  # the steps moved every weight (the zero one too)


def test_foreach_ema_equals_the_per_tensor_loop():
    online = _net(3, seed=1)
    online.train()(torch.randn(4, 3, 8, 8))  # BatchNorm statistics and step counts move
    targets = [_net(3, seed=2), _net(3, seed=2)]
    for target, foreach in zip(targets, (True, False)):
        ema_update(target, online, 0.9, foreach=foreach)
    for (name, a), b in zip(targets[0].state_dict().items(), targets[1].state_dict().values()):
        assert torch.equal(a, b), name
    assert targets[0][1].num_batches_tracked == 1  # integer buffers copied


def _calls(fn) -> int:
    with _Calls() as calls:
        fn()
    return calls.count


@pytest.mark.parametrize("foreach", [True, False])
def test_calls_per_step_do_not_grow_with_the_tensor_count(foreach):
    counts = {}
    for blocks in (2, 8):
        net = _net(blocks)
        opt = LARS(param_groups(net), lr=0.1, weight_decay=1e-4, foreach=foreach)
        _grads(net, 0)
        opt.step()  # the momentum buffers exist from here on
        target = copy.deepcopy(net)
        counts[blocks] = (_calls(opt.step), _calls(lambda: ema_update(target, net, 0.99, foreach=foreach)))
    if foreach:
        assert counts[2] == counts[8], counts
    else:  # the reference loop: calls grow with the tensors (the proxy does see launches)
        assert counts[8][0] > counts[2][0] and counts[8][1] > counts[2][1], counts
