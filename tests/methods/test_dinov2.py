import math

import torch

from pipeline.methods.dinov2 import dinov2_loss, sinkhorn_knopp
from tests.methods.test_ibot import _log_softmax
from tests.methods.vit_common import assert_matches_naive, naive_sinkhorn


def naive_dinov2(s_cls, s_patch, cls_t, patch_t, mask, tokens, ts, w=(1.0, 1.0, 0.1)):
    """DINOv2's objective written out: the DINO [CLS] loss over pairs of different crops, iBOT's
    per-image mean over masked patches, and KoLeo -1/n sum_i log(min_{j!=i} ||x_i - x_j||) on
    L2-normalised backbone [CLS] tokens, per global crop and summed."""
    v_n, b_n, k_n = s_cls.shape
    g_n, _, l_n, _ = s_patch.shape
    dino = 0.0
    for g in range(g_n):
        for v in range(v_n):
            if v != g:
                for b in range(b_n):
                    ls = _log_softmax([s_cls[v, b, k] for k in range(k_n)], ts)
                    dino = dino - sum(cls_t[g, b, k] * ls[k] for k in range(k_n)) / b_n
    ibot = 0.0
    for g in range(g_n):
        for b in range(b_n):
            count = max(1, sum(int(mask[g, b, l]) for l in range(l_n)))
            for l in range(l_n):
                if mask[g, b, l]:
                    ls = _log_softmax([s_patch[g, b, l, k] for k in range(k_n)], ts)
                    ibot = ibot - sum(patch_t[g, b, l, k] * ls[k] for k in range(k_n)) / count / b_n
    koleo = 0.0
    for g in range(g_n):
        x = [tokens[g, i] / tokens[g, i].norm() for i in range(b_n)]
        for i in range(b_n):
            nearest = min(((x[i] - x[j]).norm() for j in range(b_n) if j != i), key=lambda d: float(d.detach()))
            koleo = koleo - torch.log(nearest + 1e-8) / b_n
    return w[0] * dino / (g_n * (v_n - 1)) + w[1] * ibot / g_n + w[2] * koleo


def test_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    f64 = dict(generator=g, dtype=torch.float64)
    s_cls = (torch.rand(3, 3, 5, **f64) * 2 - 1).requires_grad_()
    s_patch = (torch.rand(2, 3, 4, 5, **f64) * 2 - 1).requires_grad_()
    cls_t = torch.softmax(torch.randn(2, 3, 5, **f64), -1)
    patch_t = torch.softmax(torch.randn(2, 3, 4, 5, **f64), -1)
    mask = torch.rand(2, 3, 4, generator=g) < 0.5
    mask[0, 0] = False  # an image without masked patches adds 0
    tokens = torch.randn(2, 3, 6, **f64).requires_grad_()

    def ours(*x):
        dino, ibot, koleo = dinov2_loss(*x, 0.1)
        return dino + ibot + 0.1 * koleo

    assert_matches_naive(ours, lambda *x: naive_dinov2(*x, 0.1), [s_cls, s_patch, cls_t, patch_t, mask, tokens])


def test_sinkhorn_knopp_matches_the_loop_over_the_rows_taking_part():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g, dtype=torch.float64)
    for keep in (None, torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.bool)):
        ours = sinkhorn_knopp(logits, 0.5, 3, keep)
        torch.testing.assert_close(ours, torch.tensor(naive_sinkhorn(logits, 0.5, 3, keep), dtype=torch.float64),
                                   atol=1e-10, rtol=1e-10)
        rows = ours.sum(1)
        taking_part = torch.ones(7, dtype=torch.bool) if keep is None else keep
        assert torch.allclose(rows[taking_part], torch.ones((), dtype=torch.float64)) and (rows[~taking_part] == 0).all()
    none = sinkhorn_knopp(logits, 0.5, 3, torch.zeros(7, dtype=torch.bool))  # no masked patch in the batch
    assert torch.equal(none, torch.zeros_like(none))
    assert math.isfinite(float(sinkhorn_knopp(logits * 100, 0.04, 3).sum()))  # log space: no overflow
