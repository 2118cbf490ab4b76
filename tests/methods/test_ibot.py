import math

import pytest
import torch

from pipeline.methods.ibot import ibot_loss, warmup_temperature
from pipeline.train.optim import param_groups
from tests.methods.vit_common import assert_matches_naive, tiny_method


def _softmax(row, t):
    den = sum(math.exp(float(v) / t) for v in row)
    return [math.exp(float(v) / t) / den for v in row]


def _log_softmax(row, t):
    """differentiable: row is a list of torch scalars"""
    lse = torch.logsumexp(torch.stack([v / t for v in row]), 0)
    return [v / t - lse for v in row]


def naive_ibot(s_cls, s_patch, t_cls, t_patch, mask, c_cls, c_patch, ts, tt, tpt):
    """iBOT's L_[CLS] + L_MIM written out: L_[CLS] = 1/(G(V-1)) sum_g sum_{v!=g} 1/B sum_b
    -P_t(g,b) . log P_s(v,b); L_MIM = 1/G sum_g 1/B sum_b [sum_l m(g,b,l) (-P_t(g,b,l) . log
    P_s(g,b,l))] / max(1, sum_l m(g,b,l)), with P_t = softmax((t - c) / tt), P_s = softmax(s / ts)."""
    v_n, b_n, k_n = s_cls.shape
    g_n, _, l_n, _ = s_patch.shape
    cls = 0.0
    for g in range(g_n):
        for v in range(v_n):
            if v != g:
                for b in range(b_n):
                    pt = _softmax([t_cls[g, b, k] - c_cls[k] for k in range(k_n)], tt)
                    ls = _log_softmax([s_cls[v, b, k] for k in range(k_n)], ts)
                    cls = cls - sum(pt[k] * ls[k] for k in range(k_n)) / b_n
    mim = 0.0
    for g in range(g_n):
        for b in range(b_n):
            count = sum(int(mask[g, b, l]) for l in range(l_n))
            for l in range(l_n):
                if mask[g, b, l]:
                    pt = _softmax([t_patch[g, b, l, k] - c_patch[k] for k in range(k_n)], tpt)
                    ls = _log_softmax([s_patch[g, b, l, k] for k in range(k_n)], ts)
                    mim = mim - sum(pt[k] * ls[k] for k in range(k_n)) / max(1, count) / b_n
    return cls / (g_n * (v_n - 1)) + mim / g_n


@pytest.mark.parametrize("temps", [(0.1, 0.04, 0.07), (0.5, 0.2, 0.3)])
def test_loss_matches_formula(temps):
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    s_cls = (torch.rand(3, 2, 5, **f64) * 2 - 1).requires_grad_()  # 2 global + 1 local crop, B=2, K=5
    s_patch = (torch.rand(2, 2, 4, 5, **f64) * 2 - 1).requires_grad_()
    t_cls, t_patch = torch.rand(2, 2, 5, **f64) * 2 - 1, torch.rand(2, 2, 4, 5, **f64) * 2 - 1
    mask = torch.tensor([[[1, 0, 1, 1], [0, 0, 0, 0]], [[0, 1, 0, 0], [1, 1, 1, 1]]], dtype=torch.bool)  # one unmasked image
    c_cls, c_patch = torch.rand(5, **f64) * 0.2, torch.rand(5, **f64) * 0.2

    def ours(*x):
        cls, mim = ibot_loss(*x, *temps)
        return cls + mim

    assert_matches_naive(ours, lambda *x: naive_ibot(*x, *temps), [s_cls, s_patch, t_cls, t_patch, mask, c_cls, c_patch])


def test_temperature_warms_up_from_the_progress_buffer():
    progress = torch.tensor(0.0)
    assert float(warmup_temperature(progress, 0.04, 0.07, 0.1)) == pytest.approx(0.04)
    assert float(warmup_temperature(progress.fill_(0.05), 0.04, 0.07, 0.1)) == pytest.approx(0.055)
    assert float(warmup_temperature(progress.fill_(0.5), 0.04, 0.07, 0.1)) == pytest.approx(0.07)
    assert float(warmup_temperature(progress, 0.04, 0.07, 0.0)) == pytest.approx(0.07)


def test_centres_and_teacher_move_only_after_the_step():
    method = tiny_method("ibot", momentum_teacher=0.9)
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(param_groups(method, params=method.optimized_parameters()), lr=0.5)
    seen = []
    method.teacher_head.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    out = method(images)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert method.mask_token.grad.abs().sum() > 0  # masked patches reach the loss
    assert not method.center.any() and not method.center_patch.any()
    teacher = seen[0]  # [2B, 1 + L, K]
    method.after_optimizer_step(0.5)
    torch.testing.assert_close(method.center, 0.1 * teacher[:, 0].mean(0))
    torch.testing.assert_close(method.center_patch, 0.1 * teacher[:, 1:].mean((0, 1)))
    assert float(method.progress) == 0.5
