"""Shared by the new methods' tests: a loss against its loop-transcribed paper formula, in
float64, for the value and the gradient of every input (to 1e-6), and a tiny encoder."""

from __future__ import annotations

import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.models.encoder import Encoder

TOL = 1e-6


def leaves(*shapes, seed: int = 0) -> list[torch.Tensor]:
    """float64 leaf tensors of the given shapes, normal(0, 1), seeded."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def assert_matches(ours, naive, inputs: list[torch.Tensor]) -> None:
    """``ours(*inputs)`` and ``naive(*inputs)`` (scalar tensors) agree to ``TOL``, and so do
    their gradients with respect to every input (an input that gets no gradient from one must
    get none, or a zero one, from the other)."""
    def value_and_grads(fn):
        xs = [x.detach().clone().requires_grad_() for x in inputs]
        loss = fn(*xs)
        loss.backward()
        return loss.detach(), [x.grad if x.grad is not None else torch.zeros_like(x) for x in xs]

    (a, ga), (b, gb) = value_and_grads(ours), value_and_grads(naive)
    assert a.dtype == torch.float64
    torch.testing.assert_close(a, b, atol=TOL, rtol=TOL)
    for i, (x, y) in enumerate(zip(ga, gb)):
        torch.testing.assert_close(x, y, atol=TOL, rtol=TOL, msg=lambda m: f"gradient of input {i}: {m}")
    assert any(g.abs().sum() > 0 for g in ga), "no gradient reached any input: the check would be vacuous"


def unit(v: torch.Tensor) -> torch.Tensor:
    """A vector divided by its norm, written out (not F.normalize)."""
    return v / torch.sqrt(sum(c * c for c in v))


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return sum(x * y for x, y in zip(a, b))


def tiny(cls, seed: int = 0, **params):
    """``cls`` on a 1-block, 8-wide ResNet (28 px, 1 channel), params overridden by ``params``."""
    torch.manual_seed(seed)
    encoder = Encoder(EncoderParams(layers=[1], width=8), 1, [0.5], [0.5])
    return cls(encoder, cls.Params(**params), AugmentParams(), seed, torch.device("cpu"))
