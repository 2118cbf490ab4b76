import pytest
import torch

from pipeline.methods.hypersphere import hypersphere_loss
from tests.methods.losscheck import assert_matches, leaves, unit


def naive_hypersphere(z1, z2, alpha, t, wa, wu):
    """Wang & Isola's L_align = E ||x - y||^alpha and L_uniform = log E_{i<j} exp(-t ||x_i - x_j||^2),
    loss = wa L_align + wu (L_uniform(x) + L_uniform(y)) / 2, with loops."""
    n = len(z1)
    x, y = [unit(v) for v in z1], [unit(v) for v in z2]
    sq = lambda a, b: sum((p - q) ** 2 for p, q in zip(a, b))  # noqa: E731
    align = sum(sq(x[i], y[i]) ** (alpha / 2) for i in range(n)) / n
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    unif = lambda u: torch.log(sum(torch.exp(-t * sq(u[i], u[j])) for i, j in pairs) / len(pairs))  # noqa: E731
    return wa * align + wu * (unif(x) + unif(y)) / 2


@pytest.mark.parametrize("alpha,t,wa,wu", [(2.0, 2.0, 1.0, 1.0), (1.0, 3.0, 0.5, 2.0)])
def test_loss_matches_paper_formula(alpha, t, wa, wu):
    assert_matches(lambda a, b: hypersphere_loss(a, b, alpha, t, wa, wu), lambda a, b: naive_hypersphere(a, b, alpha, t, wa, wu),
                   leaves((6, 5), (6, 5)))
