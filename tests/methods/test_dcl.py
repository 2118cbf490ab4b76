import pytest
import torch

from pipeline.methods.dcl import dcl_loss
from tests.methods.losscheck import assert_matches, dot, leaves, unit


def naive_dcl(z1, z2, t, sigma):
    """DCL Eq. 6 with loops, both views as anchors, mean over the 2N anchors:
    L_i = -<a_i, b_i>/t * w_i + log(sum_{j != i} exp(<a_i, a_j>/t) + sum_{j != i} exp(<a_i, b_j>/t)),
    w_i = 1 (DCL) or 2 - N exp(<z1_i, z2_i>/sigma) / sum_k exp(<z1_k, z2_k>/sigma) (DCLW, a constant)."""
    n = len(z1)
    u1, u2 = [unit(v) for v in z1], [unit(v) for v in z2]
    if sigma is None:
        w = [1.0] * n
    else:
        e = [torch.exp(dot(u1[k], u2[k]).detach() / sigma) for k in range(n)]
        w = [2 - n * e[i] / sum(e) for i in range(n)]
    total = 0
    for a, b in ((u1, u2), (u2, u1)):
        for i in range(n):
            neg = sum(torch.exp(dot(a[i], a[j]) / t) + torch.exp(dot(a[i], b[j]) / t) for j in range(n) if j != i)
            total = total - dot(a[i], b[i]) / t * w[i] + torch.log(neg)
    return total / (2 * n)


@pytest.mark.parametrize("t,sigma", [(0.1, None), (0.5, None), (0.1, 0.5), (0.3, 1.0)])
def test_loss_matches_paper_formula(t, sigma):
    assert_matches(lambda a, b: dcl_loss(a, b, t, sigma), lambda a, b: naive_dcl(a, b, t, sigma), leaves((6, 5), (6, 5)))
