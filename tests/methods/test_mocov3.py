import math

import pytest
import torch

from pipeline.errors import UserError
from pipeline.methods.mocov3 import MoCoV3, contrastive_loss
from tests.methods.losscheck import assert_resumes_exactly, assert_matches, dot, leaves, tiny, unit


def naive_ctr(q, k, t):
    """MoCo v3 Algorithm 1: ctr(q, k) = CE(q k^T / t, labels = i) * 2t, k with stop-gradient."""
    k = k.detach()
    total = 0
    for i in range(len(q)):
        logits = [dot(unit(q[i]), unit(k[j])) / t for j in range(len(k))]
        total = total - torch.log(torch.exp(logits[i]) / sum(torch.exp(s) for s in logits))
    return total / len(q) * 2 * t


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_contrastive_loss_matches_paper_formula(t):
    assert_matches(lambda q, k: contrastive_loss(q, k, t), lambda q, k: naive_ctr(q, k, t), leaves((6, 5), (6, 5)))


def test_frozen_patch_projection_needs_a_vit_and_stays_random():
    with pytest.raises(UserError, match="freeze_patch_embed.*ViT"):
        tiny(MoCoV3, freeze_patch_embed=True)
    from pipeline.config import AugmentParams, EncoderParams
    from pipeline.models.encoder import Encoder

    encoder = Encoder(EncoderParams(arch="vit", patch_size=7, dim=16, depth=1, heads=2), 1, [0.5], [0.5], image_size=28)
    method = MoCoV3(encoder, MoCoV3.Params(freeze_patch_embed=True, hidden_dim=16, projection_dim=8,
                                           predictor_hidden_dim=16), AugmentParams(), 0, torch.device("cpu"))
    patch = encoder.backbone.patch_embed
    assert not any(id(p) in {id(q) for q in method.optimized_parameters()} for p in patch.parameters())
    assert any(p.requires_grad for p in encoder.parameters())
    assert math.isfinite(method(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8))["loss"].item())


def test_resumes_exactly():
    assert_resumes_exactly(MoCoV3, hidden_dim=16, projection_dim=8, predictor_hidden_dim=16)
