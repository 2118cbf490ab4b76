import math

import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.vicreg import VICReg, vicreg_loss
from pipeline.models.encoder import Encoder


def naive_vicreg(z1, z2, lam, mu, nu, eps):
    """The paper's eq. 1-6 with loops: s = 1/(N D) sum ||z1_b - z2_b||^2 (mean squared error),
    v(Z) = 1/D sum_j max(0, 1 - sqrt(Var(z_j) + eps)) (unbiased variance),
    c(Z) = 1/D sum_{i != j} C(Z)_ij^2 with C = 1/(N-1) sum_b (z_b - mean)(z_b - mean)^T,
    loss = lam s + mu (v(Z1) + v(Z2)) / 2 + nu (c(Z1) + c(Z2))."""
    z1, z2 = z1.tolist(), z2.tolist()
    n, d = len(z1), len(z1[0])
    inv = sum((z1[b][j] - z2[b][j]) ** 2 for b in range(n) for j in range(d)) / (n * d)

    def var_cov(z):
        mean = [sum(z[b][j] for b in range(n)) / n for j in range(d)]
        cov = [[sum((z[b][i] - mean[i]) * (z[b][j] - mean[j]) for b in range(n)) / (n - 1) for j in range(d)]
               for i in range(d)]
        v = sum(max(0.0, 1 - math.sqrt(cov[j][j] + eps)) for j in range(d)) / d
        c = sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d
        return v, c

    (v1, c1), (v2, c2) = var_cov(z1), var_cov(z2)
    return lam * inv + mu * (v1 + v2) / 2 + nu * (c1 + c2)


def test_vicreg_loss_matches_paper_formula():
    g = torch.Generator().manual_seed(0)
    # std around 0.5 in some dimensions and 2 in others: the hinge is active and inactive
    z1 = torch.randn(7, 5, generator=g) * torch.tensor([0.3, 0.5, 2.0, 1.0, 3.0])
    z2 = z1 + 0.5 * torch.randn(7, 5, generator=g)
    for coeffs in ((25.0, 25.0, 1.0), (1.0, 2.0, 3.0)):
        ours, terms = vicreg_loss(z1, z2, *coeffs, 1e-4)
        assert abs(ours.item() - naive_vicreg(z1, z2, *coeffs, 1e-4)) < 1e-5 * max(1.0, abs(ours.item()))
        assert set(terms) == {"invariance", "variance", "covariance"}


def test_vicreg_terms():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    z = torch.linalg.qr(x - x.mean(dim=0)).Q * 16  # zero-mean, decorrelated columns of std 16/sqrt(63) ~ 2
    loss, terms = vicreg_loss(z, z, 25.0, 25.0, 1.0, 1e-4)
    assert terms["invariance"] == 0 and terms["variance"] == 0 and terms["covariance"] < 1e-3
    collapsed = torch.zeros(64, 8)
    _, terms = vicreg_loss(collapsed, collapsed, 25.0, 25.0, 1.0, 1e-4)
    assert abs(terms["variance"].item() - (1 - math.sqrt(1e-4))) < 1e-6  # the hinge at its maximum


def test_step_logs_terms():
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(width=8), 1, [0.286], [0.353])
    method = VICReg(encoder, VICReg.Params(hidden_dim=32, projection_dim=16), AugmentParams(), 0, torch.device("cpu"))
    out = method(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8))
    assert set(out) == {"loss", "invariance", "variance", "covariance"} and math.isfinite(out["loss"].item())
    out["loss"].backward()
    assert all(p.grad is not None for p in method.optimized_parameters())


