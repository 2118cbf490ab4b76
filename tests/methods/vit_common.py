"""Shared pieces of the ViT-method tests (SimMIM, iBOT, DINOv2-style, I-JEPA, MSN): a tiny
ViT method builder and the float64 loss-and-gradient comparison against a loop formula."""

from __future__ import annotations

import math

import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.registry import METHODS
from pipeline.models.encoder import Encoder

# per-method overrides that keep heads tiny (the rest: each Params class's defaults)
TINY = {
    "simmim": {},
    "ibot": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16},
    "dinov2": {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16},
    # ijepa: wide size ranges, so that block sizes (drawn on the host, one per batch) differ from step to step
    "ijepa": {"predictor_dim": 16, "predictor_depth": 1, "target_scale": [0.05, 0.5], "target_aspect": [0.3, 3.0]},
    "msn": {"num_prototypes": 16, "hidden_dim": 32, "output_dim": 16},
}


def tiny_method(name: str, seed: int = 0, **overrides):
    """The method on a 1-block, 16-d ViT with 7 px patches of 28 px images (a 4x4 grid)."""
    torch.manual_seed(seed)
    encoder = Encoder(EncoderParams(arch="vit", patch_size=7, dim=16, depth=1, heads=2, pool="cls"), 1, [0.286], [0.353], 28)
    cls = METHODS.get(name)
    return cls(encoder, cls.Params(**{**TINY[name], **overrides}), AugmentParams(), seed, torch.device("cpu"))


def assert_matches_naive(ours, naive, inputs: list[torch.Tensor], tol: float = 1e-6) -> None:
    """``ours(*inputs)`` and ``naive(*inputs)`` (float64 scalars) agree to ``tol``, and so do
    their gradients with respect to every input that requires one."""
    wants = [x for x in inputs if x.requires_grad]
    a = ours(*inputs)
    ga = torch.autograd.grad(a, wants)
    b = naive(*inputs)
    gb = torch.autograd.grad(b, wants)
    assert a.dtype == torch.float64 and math.isfinite(a.item())
    assert abs(a.item() - b.item()) <= tol * max(1.0, abs(b.item())), (a.item(), b.item())
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)
        assert y.abs().max() > 0  # the gradient is compared where it is non-zero


def naive_sinkhorn(scores, temperature, iterations, keep=None):
    """SwAV/DINOv2's Sinkhorn-Knopp written out with loops over a list of lists: Q[k][b] =
    exp(score[b][k] / t) over the kept samples b; per iteration each prototype row is divided
    by its sum and by K, each sample column by its sum and by B; returns B * Q as [b][k]."""
    n, k = scores.shape
    rows = [b for b in range(n) if keep is None or bool(keep[b])]
    q = {(j, b): math.exp(float(scores[b, j]) / temperature) for j in range(k) for b in rows}
    for _ in range(iterations):
        for j in range(k):
            s = sum(q[j, b] for b in rows)
            for b in rows:
                q[j, b] /= s * k
        for b in rows:
            s = sum(q[j, b] for j in range(k))
            for j in range(k):
                q[j, b] /= s * len(rows)
    return [[q[j, b] * len(rows) if (j, b) in q else 0.0 for j in range(k)] for b in range(n)]
