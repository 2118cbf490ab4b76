import math

import pytest
import torch

from pipeline.methods.debiased import debiased_loss
from pipeline.methods.simclr import nt_xent
from tests.methods.losscheck import assert_matches, dot, leaves, unit


def naive_debiased(z1, z2, t, tau_plus):
    """Chuang et al. Eq. 5 (M = 1) with loops over SimCLR's 2N anchors: pos = exp(<u, u+>/t),
    Ng = max((sum_negatives exp(<u, v>/t) - tau_plus n pos) / (1 - tau_plus), n e^{-1/t}), n = 2N - 2,
    L = mean -log(pos / (pos + Ng))."""
    u = [unit(v) for v in torch.cat([z1, z2])]
    m, n = len(u), len(u) - 2
    total = 0
    for i in range(m):
        partner = (i + m // 2) % m
        pos = torch.exp(dot(u[i], u[partner]) / t)
        neg = sum(torch.exp(dot(u[i], u[j]) / t) for j in range(m) if j not in (i, partner))
        ng = torch.clamp((neg - tau_plus * n * pos) / (1 - tau_plus), min=n * math.exp(-1 / t))
        total = total - torch.log(pos / (pos + ng))
    return total / m


@pytest.mark.parametrize("t,tau_plus", [(0.5, 0.1), (0.2, 0.3), (0.1, 0.9)])  # the last: the clamp binds for some anchors
def test_loss_matches_paper_formula(t, tau_plus):
    assert_matches(lambda a, b: debiased_loss(a, b, t, tau_plus), lambda a, b: naive_debiased(a, b, t, tau_plus),
                   leaves((5, 4), (5, 4)))


def test_no_false_negative_prior_is_simclr():
    z1, z2 = leaves((6, 5), (6, 5))
    torch.testing.assert_close(debiased_loss(z1, z2, 0.5, 0.0), nt_xent(z1, z2, 0.5))
