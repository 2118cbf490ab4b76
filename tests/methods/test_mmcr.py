import math

import pytest
import torch

from pipeline.methods.mmcr import mmcr_loss
from tests.methods.losscheck import assert_matches, leaves, unit


def _nuclear_2xd(a, b):
    """Nuclear norm of the 2 x D matrix [a; b]: the square roots of the 2 eigenvalues of its
    2 x 2 Gram matrix [[p, r], [r, q]], (p + q)/2 +- sqrt(((p - q)/2)^2 + r^2), in closed form."""
    p, q, r = sum(x * x for x in a), sum(x * x for x in b), sum(x * y for x, y in zip(a, b))
    disc = torch.sqrt(((p - q) / 2) ** 2 + r**2)
    return torch.sqrt((p + q) / 2 + disc) + torch.sqrt((p + q) / 2 - disc)


def naive_mmcr(z, lmda):
    """MMCR with loops: unit views z_ik, centroids c_i = 1/K sum_k z_ik, loss = -||C||_* +
    lmda/N sum_i ||Z_i||_*. ||C||_* = sum_j sqrt(lambda_j(C C^T)) (C C^T built with loops, N < D
    so it is full rank); ||Z_i||_* for K = 2 in closed form."""
    n, k, d = z.shape
    u = [[unit(z[i, v]) for v in range(k)] for i in range(n)]
    c = [[sum(u[i][v][j] for v in range(k)) / k for j in range(d)] for i in range(n)]
    gram = torch.stack([torch.stack([sum(c[i][j] * c[l][j] for j in range(d)) for l in range(n)]) for i in range(n)])
    loss = -torch.linalg.eigvalsh(gram).sqrt().sum()
    return loss + lmda * sum(_nuclear_2xd(u[i][0], u[i][1]) for i in range(n)) / n


@pytest.mark.parametrize("lmda", [0.0, 5e-3, 0.5])
def test_loss_matches_paper_formula(lmda):
    assert_matches(lambda z: mmcr_loss(z, lmda), lambda z: naive_mmcr(z, lmda), leaves((4, 2, 6)))


def test_aligned_spread_views_score_best():
    eye = torch.eye(4, dtype=torch.float64)
    aligned = torch.stack([eye, eye], dim=1)  # [4, 2, 4]: each image's views agree, images orthogonal
    collapsed = torch.ones(4, 2, 4, dtype=torch.float64)
    assert mmcr_loss(aligned, 0.0) == pytest.approx(-4.0) and mmcr_loss(collapsed, 0.0) == pytest.approx(-2.0)
    assert mmcr_loss(aligned, 0.0) < mmcr_loss(torch.randn(4, 2, 4, dtype=torch.float64), 0.0)
    assert math.isfinite(mmcr_loss(aligned, 1.0).item())
