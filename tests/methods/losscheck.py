"""Shared by the new methods' tests: a loss against its loop-transcribed paper formula, in
float64, for the value and the gradient of every input (to 1e-6), and a tiny encoder."""

from __future__ import annotations

import copy

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


def assert_resumes_exactly(cls, **params) -> None:
    """Train ``cls`` two steps, checkpoint it as the loop does (``state_dict`` + ``extra_state``),
    load that into a fresh instance of another seed, and take a third step on both: the same
    loss and the same buffers (queues, running matrices, EMA targets), to the bit."""
    images = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    a = tiny(cls, seed=0, **params)
    a.prepare(images)
    opt = torch.optim.SGD(a.optimized_parameters(), lr=0.1)
    for step in range(2):
        opt.zero_grad()
        a(images)["loss"].backward()
        opt.step()
        a.after_optimizer_step((step + 1) / 3)
    state, extra = copy.deepcopy(a.state_dict()), copy.deepcopy(a.extra_state())
    b = tiny(cls, seed=1, **params)
    b.load_state_dict(state)
    b.load_extra_state(extra)
    assert torch.equal(a(images)["loss"], b(images)["loss"])
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
        assert torch.equal(x, y), name
