import math

import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.barlow_twins import BarlowTwins, barlow_twins_loss
from pipeline.models.encoder import Encoder


def naive_barlow_twins(z1, z2, lambd, scale, eps=1e-5):
    """The paper's eq. 1-2 with loops: each dimension standardised over the batch (mean 0,
    biased variance 1, as BatchNorm without affine), C_ij = sum_b a_bi c_bj / N, loss
    sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2, times scale."""
    n, d = len(z1), len(z1[0])

    def standardize(z):
        cols = []
        for j in range(d):
            col = [z[b][j] for b in range(n)]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / n
            cols.append([(v - mean) / math.sqrt(var + eps) for v in col])
        return cols  # [D][N]

    a, c = standardize(z1.tolist()), standardize(z2.tolist())
    loss = 0.0
    for i in range(d):
        for j in range(d):
            cij = sum(a[i][b] * c[j][b] for b in range(n)) / n
            loss += (1 - cij) ** 2 if i == j else lambd * cij**2
    return scale * loss


def test_barlow_twins_loss_matches_paper_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g) * 3 + 1
    for lambd, scale in ((0.0051, 0.024), (0.5, 1.0)):
        ours = barlow_twins_loss(z1, z2, lambd, scale).item()
        assert abs(ours - naive_barlow_twins(z1, z2, lambd, scale)) < 1e-5 * max(1.0, abs(ours))


def test_barlow_twins_loss_prefers_identical_decorrelated_views():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    z = torch.linalg.qr(x - x.mean(dim=0)).Q * 8  # zero-mean, decorrelated dimensions
    assert barlow_twins_loss(z, z, 0.0051, 1.0) < 0.01  # C = I up to the BatchNorm eps
    # invariant to each dimension's scale and offset (the batch standardisation)
    assert torch.isclose(barlow_twins_loss(z * 3 + 2, z, 0.0051, 1.0), barlow_twins_loss(z, z, 0.0051, 1.0), atol=1e-4)
    assert barlow_twins_loss(z, torch.randn(64, 8, generator=g), 0.0051, 1.0) > 1.0
    collapsed = z[:, :1].expand(64, 8)  # all dimensions the same: maximal redundancy
    assert barlow_twins_loss(collapsed, collapsed, 1.0, 1.0) > 50


def test_step_two_views_through_projector():
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(width=8), 1, [0.286], [0.353])
    method = BarlowTwins(encoder, BarlowTwins.Params(hidden_dim=32, projection_dim=16), AugmentParams(), 0,
                         torch.device("cpu"))
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    out = method(images)
    assert out["loss"].ndim == 0 and math.isfinite(out["loss"].item())
    out["loss"].backward()
    assert all(p.grad is not None for p in method.optimized_parameters())


