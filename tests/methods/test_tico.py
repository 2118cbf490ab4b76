import pytest
import torch

from pipeline.methods.tico import TiCo, tico_loss
from tests.methods.losscheck import assert_resumes_exactly, assert_matches, dot, leaves, tiny, unit


def naive_tico(z1, z2, c, beta, rho):
    """TiCo Algorithm 1 with loops: B = 1/N sum_i z1_i z1_i^T, C = beta c + (1 - beta) B,
    loss = -1/N sum_i <z1_i, z2_i> + rho/N sum_i sum_ab z1_ia C_ab z1_ib (unit z)."""
    n, d = z1.shape
    u1, u2 = [unit(v) for v in z1], [unit(v) for v in z2]
    cnew = [[beta * c[a, b] + (1 - beta) * sum(u1[i][a] * u1[i][b] for i in range(n)) / n for b in range(d)] for a in range(d)]
    inv = sum(dot(u1[i], u2[i]) for i in range(n)) / n
    quad = sum(u1[i][a] * cnew[a][b] * u1[i][b] for i in range(n) for a in range(d) for b in range(d)) / n
    return -inv + rho * quad, torch.stack([torch.stack(row) for row in cnew])


def _c():
    x = leaves((7, 4), seed=3)[0].detach()
    return x.T @ x / 7  # a second-moment matrix, as the running C is


@pytest.mark.parametrize("beta,rho", [(0.9, 20.0), (0.5, 1.0)])
def test_loss_matches_paper_formula(beta, rho):
    c = _c()
    assert_matches(lambda a, b: tico_loss(a, b, c, beta, rho)[0], lambda a, b: naive_tico(a, b, c, beta, rho)[0],
                   leaves((6, 4), (6, 4)))
    z1, z2 = leaves((6, 4), (6, 4))
    ours, naive = tico_loss(z1, z2, c, beta, rho)[1], naive_tico(z1, z2, c, beta, rho)[1]
    assert not ours.requires_grad
    torch.testing.assert_close(ours, naive.detach(), atol=1e-9, rtol=1e-9)


def test_step_keeps_the_running_matrix():
    method = tiny(TiCo, hidden_dim=16, projection_dim=8)
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(method.cov, torch.zeros(8, 8))
    method(images)["loss"].backward()
    first = method.cov.clone()
    torch.testing.assert_close(torch.trace(first), torch.tensor(0.1))  # (1 - beta) * trace(B), B of unit rows: trace 1
    method(images)
    assert not torch.equal(method.cov, first) and "cov" in method.state_dict()


def test_resumes_exactly():
    assert_resumes_exactly(TiCo, hidden_dim=16, projection_dim=8)
