import math

import pytest
import torch

from pipeline.methods.msn import msn_loss
from tests.methods.vit_common import assert_matches_naive, naive_sinkhorn


def naive_msn(anchors, targets, prototypes, tau, temp, iters, me_max_weight=1.0):
    """MSN's Eq. 3-4 written out: p = softmax(cos(z, q) / tau); the target's sharpened
    p^(1/T) / sum p^(1/T), Sinkhorn-balanced; ce = 1/(VB) sum H(target_b, p_vb); me-max =
    log K - H(1/(VB) sum p_vb)."""
    v_n, b_n, _ = anchors.shape
    k_n = prototypes.shape[0]
    q = [prototypes[k] / prototypes[k].norm() for k in range(k_n)]

    def probs(z):
        z = z / z.norm()
        e = [torch.exp(torch.dot(z, q[k]) / tau) for k in range(k_n)]
        return [x / sum(e) for x in e]

    sharp = []
    for b in range(b_n):
        p = [float(x.detach()) ** (1 / temp) for x in probs(targets[b])]
        sharp.append([x / sum(p) for x in p])
    if iters:
        logs = torch.tensor([[math.log(x) for x in row] for row in sharp], dtype=torch.float64)
        sharp = naive_sinkhorn(logs, 1.0, iters)
    ce, mean_p = 0.0, [0.0] * k_n
    for v in range(v_n):
        for b in range(b_n):
            p = probs(anchors[v, b])
            ce = ce - sum(sharp[b][k] * torch.log(p[k]) for k in range(k_n)) / (v_n * b_n)
            mean_p = [m + p[k] / (v_n * b_n) for k, m in enumerate(mean_p)]
    return ce + me_max_weight * (math.log(k_n) + sum(m * torch.log(m) for m in mean_p))


@pytest.mark.parametrize("iters", [0, 3])
def test_loss_matches_formula(iters):
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(2, 4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randn(4, 3, generator=g, dtype=torch.float64)
    protos = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def ours(*x):
        ce, me_max = msn_loss(*x, 0.1, 0.25, iters)
        return ce + me_max

    assert_matches_naive(ours, lambda *x: naive_msn(*x, 0.1, 0.25, iters), [anchors, targets, protos])


def test_targets_carry_no_gradient_and_me_max_is_zero_when_even():
    targets = torch.randn(4, 3, requires_grad=True)
    ce, me_max = msn_loss(torch.randn(1, 4, 3), targets, torch.randn(5, 3, requires_grad=True), 0.1, 0.25, 3)
    (ce + me_max).backward()
    assert targets.grad is None
    # anchors spread evenly over 4 orthogonal prototypes: the mean prediction is uniform
    eye = torch.eye(4, dtype=torch.float64)
    _, even = msn_loss(eye[None], eye, eye, 0.1, 0.25, 0)
    assert abs(float(even)) < 1e-12
