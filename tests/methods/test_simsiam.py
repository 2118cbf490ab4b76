import torch
from torch import nn

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.simsiam import SimSiam, simsiam_loss
from pipeline.models.encoder import Encoder
from tests.conftest import random_images


def _simsiam(**params) -> SimSiam:
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(layers=[1], width=8), 1, [0.5], [0.5])
    return SimSiam(encoder, SimSiam.Params(**params), AugmentParams(), 0, torch.device("cpu"))


def naive_simsiam_loss(p1, p2, z1, z2):
    """SimSiam Eq. 1-2 with loops: D(p, z) = -p/|p| . z/|z|, L = D(p1, z2)/2 + D(p2, z1)/2."""
    def d(p, z):
        return sum(-float(p[i] @ z[i]) / float(p[i].norm() * z[i].norm()) for i in range(len(p))) / len(p)

    return d(p1, z2) / 2 + d(p2, z1) / 2


def test_loss_matches_paper_formula():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(6, 5, generator=g) for _ in range(4))
    assert abs(simsiam_loss(p1, p2, z1, z2).item() - naive_simsiam_loss(p1, p2, z1, z2)) < 1e-5
    assert abs(simsiam_loss(z2, z1, z1, z2).item() + 1) < 1e-6  # minimum -1 when aligned


def test_stop_gradient():
    p1, p2, z1, z2 = (torch.randn(4, 5, requires_grad=True) for _ in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0


def test_projections_get_gradient_only_through_the_predictor():
    """Cut the predictor's output from the graph: with the stop-gradient on z, nothing in
    the loss is then differentiable (without it, z would still carry gradient)."""
    model = _simsiam()

    class Detached(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x).detach()

    model.predictor = Detached(model.predictor)
    assert not model.training_step(random_images(4, size=16))["loss"].requires_grad


def test_heads_follow_the_paper():
    model = _simsiam(dim=64, predictor_hidden_dim=16)
    linears = [m for m in model.projector if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and isinstance(model.projector[-1], nn.BatchNorm1d)  # BN on the output, no ReLU
    pred = [m for m in model.predictor if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in pred] == [(64, 16), (16, 64)]  # bottleneck
    assert not isinstance(model.predictor[-1], nn.BatchNorm1d)
    z = []
    model.projector.register_forward_hook(lambda mod, args, out: z.append(out.detach()))
    out = model.training_step(random_images(4, size=16))
    z1 = z[0][:4]  # the first view's projections: std over the batch of the unit vectors, mean over dims
    assert out["loss"].ndim == 0
    torch.testing.assert_close(out["z_std"], nn.functional.normalize(z1, dim=1).std(dim=0).mean())
