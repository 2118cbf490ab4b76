import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.byol import BYOL, regression_loss
from pipeline.models.encoder import Encoder
from tests.conftest import random_images


def _byol(**params) -> BYOL:
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(layers=[1], width=8), 1, [0.5], [0.5])
    return BYOL(encoder, BYOL.Params(**params), AugmentParams(), 0, torch.device("cpu"))


def naive_regression_loss(p, z):
    """BYOL Eq. 2 with loops: || p/|p| - z/|z| ||^2, averaged over the batch."""
    total = 0.0
    for i in range(len(p)):
        diff = p[i] / p[i].norm() - z[i] / z[i].norm()
        total += sum(float(d) ** 2 for d in diff)
    return total / len(p)


def test_regression_loss_matches_paper_formula():
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert abs(regression_loss(p, z).item() - naive_regression_loss(p, z)) < 1e-5
    assert regression_loss(p, 3 * p).item() < 1e-6  # scale-invariant, zero when aligned


def test_no_gradient_reaches_the_target_branch():
    p = torch.randn(4, 5, requires_grad=True)
    z = torch.randn(4, 5, requires_grad=True)
    regression_loss(p, z).backward()
    assert z.grad is None and p.grad.abs().sum() > 0

    byol = _byol()
    byol.training_step(random_images(4, size=16))["loss"].backward()
    target = [*byol.target_encoder.parameters(), *byol.target_projector.parameters()]
    assert all(t.grad is None for t in target)
    assert all(p.grad is not None for p in [*byol.encoder.parameters(), *byol.projector.parameters(), *byol.predictor.parameters()])


def test_target_moves_only_in_after_optimizer_step():
    byol = _byol()
    target = [*byol.target_encoder.parameters(), *byol.target_projector.parameters()]
    online = [*byol.encoder.parameters(), *byol.projector.parameters()]
    optimized = {id(p) for p in byol.optimized_parameters()}
    assert not optimized & {id(t) for t in target} and not any(t.requires_grad for t in target)
    assert {id(p) for p in [*online, *byol.predictor.parameters()]} <= optimized

    opt = torch.optim.SGD(byol.optimized_parameters(), lr=0.5)
    before = [t.clone() for t in target]
    byol.training_step(random_images(4, size=16))["loss"].backward()
    opt.step()
    assert all(torch.equal(a, t) for a, t in zip(before, target))  # frozen outside the hook
    byol.after_optimizer_step(0.0)  # tau = base_tau
    for b, t, o in zip(before, target, online):
        assert torch.allclose(t, 0.996 * b + 0.004 * o)
    assert any(not torch.equal(a, t) for a, t in zip(before, target))


def test_tau_schedule_endpoints():
    byol = _byol()
    assert abs(byol.momentum(0.0) - 0.996) < 1e-12
    assert abs(byol.momentum(0.5) - 0.998) < 1e-12
    assert byol.momentum(1.0) == 1.0
    # at the end of training (tau = 1) the target stops following the online network
    with torch.no_grad():
        for p in byol.encoder.parameters():
            p.add_(1.0)
    before = [t.clone() for t in byol.target_encoder.parameters()]
    byol.after_optimizer_step(1.0)
    assert all(torch.equal(a, t) for a, t in zip(before, byol.target_encoder.parameters()))
