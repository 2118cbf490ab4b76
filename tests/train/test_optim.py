"""The optimizer options: LARS against a hand-written step, AdamW betas, gradient clipping."""

import pytest
import torch
from torch import nn

from pipeline.config import OptimParams
from pipeline.train.lars import LARS
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import build_optimizer, param_groups


def _model_with_grads(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model(torch.randn(8, 5)).pow(2).sum().backward()
    return model


def test_lars_step_matches_the_formula_per_tensor():
    lr, wd, eta, mom = 0.5, 1e-2, 0.02, 0.9
    model = _model_with_grads()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    cfg = OptimParams(epochs=1, batch_size=256, optimizer="lars", lr=lr, weight_decay=wd, momentum=mom, lars_eta=eta)
    opt = build_optimizer(param_groups(model), cfg, world_size=1)
    assert isinstance(opt, LARS)
    opt.step()
    for n, p in model.named_parameters():
        w, g = before[n], grads[n]
        if w.ndim > 1:  # weight: decayed, then scaled by eta * ||w|| / ||g + wd w||
            d = g + wd * w
            d = d * (eta * w.norm() / d.norm())
        else:  # bias / BatchNorm: no decay, no trust ratio (plain SGD step)
            d = g
        torch.testing.assert_close(p.detach(), w - lr * d)
    # second step: momentum buffer carries the first update
    first = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()  # same gradients again
    for n, p in model.named_parameters():
        w0, g = before[n], grads[n]
        w1 = first[n]
        if w0.ndim > 1:
            d0 = (g + wd * w0) * (eta * w0.norm() / (g + wd * w0).norm())
            d1 = (g + wd * w1) * (eta * w1.norm() / (g + wd * w1).norm())
        else:
            d0 = d1 = g
        torch.testing.assert_close(p.detach(), w1 - lr * (mom * d0 + d1))


def test_lars_trust_ratio_makes_the_step_independent_of_the_gradient_scale():
    steps = []
    for scale in (1.0, 1000.0):
        p = nn.Parameter(torch.ones(3, 3))
        p.grad = torch.full((3, 3), 0.1 * scale)
        LARS([p], lr=1.0, eta=0.01).step()
        steps.append(1.0 - p.detach())
    torch.testing.assert_close(steps[0], steps[1])


def test_adamw_takes_the_configured_betas():
    model = _model_with_grads()
    cfg = OptimParams(epochs=1, batch_size=256, optimizer="adamw", lr=1e-3, betas=[0.9, 0.95])
    opt = build_optimizer(param_groups(model), cfg, world_size=1)
    assert isinstance(opt, torch.optim.AdamW) and all(g["betas"] == (0.9, 0.95) for g in opt.param_groups)


class _Huge(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return {"loss": (1e6 * (self.w - x.mean(0)) ** 2).sum()}


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_grad_clip_bounds_the_step(clip):
    model = _Huge()
    x = torch.ones(4, 3)
    job = TrainJob(module=model, param_groups=param_groups(model), batches=lambda e: [(x,)], steps_per_epoch=1,
                   optim=OptimParams(epochs=1, batch_size=4, lr=64.0, momentum=0.0, grad_clip=clip))
    hist = fit(job, torch.device("cpu"))
    # lr 64 per 256 at batch 4 is lr 1: one plain step moves w by the full gradient (2e6 per entry);
    # clipped to norm 1 it moves w by exactly 1 in total
    moved = model.w.detach().norm().item()
    if clip:
        assert moved == pytest.approx(1.0, rel=1e-5) and hist[0]["grad_norm"] == pytest.approx(2e6 * 3**0.5, rel=1e-5)
    else:
        assert moved == pytest.approx(2e6 * 3**0.5, rel=1e-5) and "grad_norm" not in hist[0]
