import pytest
import torch

from pipeline.methods.wmse import WMSE, whiten, wmse_loss
from tests.methods.losscheck import assert_resumes_exactly, assert_matches, leaves, tiny


def _cholesky(a):
    """Cholesky-Banachiewicz with loops: L with L L^T = a (lists of scalar tensors)."""
    d = len(a)
    low = [[torch.zeros((), dtype=torch.float64) for _ in range(d)] for _ in range(d)]
    for i in range(d):
        for j in range(i + 1):
            s = sum(low[i][k] * low[j][k] for k in range(j))
            low[i][j] = torch.sqrt(a[i][i] - s) if i == j else (a[i][j] - s) / low[j][j]
    return low


def naive_whiten(x, eps):
    """W-MSE Eq. 4-5 for one group x [W, D]: xc = x - mean, Sigma = xc^T xc / (W - 1), shrunk,
    L = cholesky(Sigma), rows L^{-1} xc_i by forward substitution."""
    w, d = x.shape
    mean = [sum(x[i, j] for i in range(w)) / w for j in range(d)]
    xc = [[x[i, j] - mean[j] for j in range(d)] for i in range(w)]
    cov = [[(1 - eps) * sum(xc[i][a] * xc[i][b] for i in range(w)) / (w - 1) + (eps if a == b else 0.0) for b in range(d)]
           for a in range(d)]
    low = _cholesky(cov)
    out = []
    for i in range(w):
        y = []
        for a in range(d):
            y.append((xc[i][a] - sum(low[a][k] * y[k] for k in range(a))) / low[a][a])
        out.append(y)
    return out


def naive_wmse(z1, z2, groups, eps):
    """mean over the grouped images of || w1/|w1| - w2/|w2| ||^2, each view whitened per group."""
    total, count = 0, 0
    for g in groups.tolist():
        w1, w2 = naive_whiten(z1[g], eps), naive_whiten(z2[g], eps)
        for a, b in zip(w1, w2):
            na, nb = torch.sqrt(sum(v * v for v in a)), torch.sqrt(sum(v * v for v in b))
            total = total + sum((p / na - q / nb) ** 2 for p, q in zip(a, b))
            count += 1
    return total / count


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_loss_matches_paper_formula(eps):
    groups = torch.tensor([[4, 0, 7, 2, 9], [1, 8, 3, 6, 5]])  # 2 sub-batches of 5 of 11 images: one left out
    assert_matches(lambda a, b: wmse_loss(a, b, groups, eps), lambda a, b: naive_wmse(a, b, groups, eps),
                   leaves((11, 3), (11, 3)))


def test_whitened_groups_have_identity_covariance():
    x = leaves((3, 40, 5))[0].detach() @ torch.randn(5, 5, dtype=torch.float64)  # correlated columns
    w = whiten(x, 0.0)
    cov = (w - w.mean(1, keepdim=True)).transpose(1, 2) @ (w - w.mean(1, keepdim=True)) / 39
    torch.testing.assert_close(cov, torch.eye(5, dtype=torch.float64).expand(3, 5, 5))


def test_step_whitens_sub_batches_of_the_configured_size():
    method = tiny(WMSE, whitening_size=4, projection_dim=3, hidden_dim=8)
    seen = []
    import pipeline.methods.wmse as module

    real = module.wmse_loss
    module.wmse_loss = lambda z1, z2, groups, eps: (seen.append(groups.clone()), real(z1, z2, groups, eps))[1]
    try:
        method(torch.randint(0, 256, (10, 1, 28, 28), dtype=torch.uint8))["loss"].backward()
    finally:
        module.wmse_loss = real
    (groups,) = seen  # 10 images -> 2 groups of 4, the other 2 left out this step
    assert groups.shape == (2, 4) and len(set(groups.flatten().tolist())) == 8


def test_resumes_exactly():
    assert_resumes_exactly(WMSE, whitening_size=4, hidden_dim=16, projection_dim=3)
