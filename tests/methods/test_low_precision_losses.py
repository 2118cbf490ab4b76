"""The losses that need float32 (Sinkhorn's exp(scores / epsilon), softmax temperatures,
InfoNCE) stay finite and close to their float32 values when their inputs come as float16 at
the ranges a float16 autocast region produces (projections of magnitude 10-300, logits up to
fp16's 6.5e4), computed under ``torch.autocast("cpu", torch.float16)`` as a GPU's fp16
autocast would run them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.methods.barlow_twins import barlow_twins_loss
from pipeline.methods.dino import dino_loss
from pipeline.methods.moco import info_nce
from pipeline.methods.simclr import nt_xent
from pipeline.methods.swav import sinkhorn, swav_loss
from pipeline.methods.vicreg import vicreg_loss

B, D, K = 16, 32, 50


def _randn(*shape, scale=1.0, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _cos(*shape, seed=0):  # cosine scores in [-1, 1]
    return F.normalize(_randn(*shape, seed=seed), dim=-1) @ F.normalize(_randn(shape[-1], shape[-1], seed=seed + 1), dim=0)


LOSSES = {  # name -> (loss of float inputs, float32 inputs at fp16-like ranges)
    "simclr_nt_xent_t0.07": (lambda z1, z2: nt_xent(z1, z2, 0.07), (_randn(B, D, scale=300), _randn(B, D, scale=300, seed=1))),
    "moco_info_nce_t0.07": (lambda q, k, queue: info_nce(q, k, queue, 0.07),
                            (_randn(B, D, scale=300), _randn(B, D, scale=300, seed=1), F.normalize(_randn(4 * B, D, seed=2), dim=1))),
    "dino_temps_0.1_0.04": (lambda s, t: dino_loss(s, t, t.mean(dim=(0, 1)), 0.1, 0.04),
                            (_randn(4, B, K, scale=2e4).clamp(-6e4, 6e4), _randn(2, B, K, scale=2e4, seed=1).clamp(-6e4, 6e4))),
    "swav_sinkhorn_eps0.05": (lambda s: swav_loss(s, torch.stack([sinkhorn(s[i], 0.05, 3) for i in range(2)]), 0.1),
                              (_cos(4, B, K).clamp(-1, 1),)),
    "barlow_twins": (lambda a, b: barlow_twins_loss(a, b, 0.0051, 0.1), (_randn(B, D, scale=10), _randn(B, D, scale=10, seed=1))),
    "vicreg": (lambda a, b: vicreg_loss(a, b, 25.0, 25.0, 1.0, 1e-4)[0], (_randn(B, D, scale=10), _randn(B, D, scale=10, seed=1))),
}


@pytest.mark.parametrize("name", LOSSES)
def test_loss_is_finite_and_close_to_float32_from_float16_inputs(name):
    fn, inputs = LOSSES[name]
    reference = fn(*inputs)
    half = [x.half().requires_grad_() for x in inputs]
    with torch.autocast("cpu", dtype=torch.float16):
        loss = fn(*half)
    loss.backward()
    grads = [x.grad for x in half if x.grad is not None]  # (teachers, keys and queues take none)
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    # float16 inputs carry ~3 significant digits: the loss keeps about as many
    torch.testing.assert_close(loss.float(), reference, rtol=2e-2, atol=2e-2)


def test_sinkhorn_codes_from_float16_scores_are_float32_distributions():
    """exp(20) = 4.9e8 overflows float16: the codes are computed in log space, in float32."""
    scores = _cos(B, K).clamp(-1, 1).half()
    codes = sinkhorn(scores, 0.05, 3)
    assert codes.dtype == torch.float32 and torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(B))
    torch.testing.assert_close(codes, sinkhorn(scores.float(), 0.05, 3))
