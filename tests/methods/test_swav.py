import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods import swav as swav_module
from pipeline.methods.swav import SwAV, sinkhorn, swav_loss
from pipeline.models.encoder import Encoder
from pipeline.train.optim import param_groups

EPS = 0.05


def naive_sinkhorn(scores, eps, iters):
    """The paper's Algorithm (appendix A.1) with loops, in float64: Q = exp(scores/eps)^T
    [K x B], divided by its sum; then per iteration rows (prototypes) to 1/K and columns
    (samples) to 1/B; finally Q * B, returned as [B x K]."""
    b, k = len(scores), len(scores[0])
    q = [[math.exp(float(scores[i][j]) / eps) for i in range(b)] for j in range(k)]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        for j in range(k):
            r = sum(q[j])
            q[j] = [v / r / k for v in q[j]]
        for i in range(b):
            c = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / c / b
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


def cosine_scores(b, k, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(b, d, generator=g), dim=1)
    w = F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ w.T  # [B, K] cosines in [-1, 1]


def test_sinkhorn_matches_paper_algorithm():
    scores = cosine_scores(7, 5, 4)
    for iters in (1, 3, 10):
        ours = sinkhorn(scores, EPS, iters).double()
        assert torch.allclose(ours, naive_sinkhorn(scores.tolist(), EPS, iters), atol=1e-5), iters


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_sinkhorn_finite_and_doubly_stochastic_where_naive_exp_overflows(dtype):
    b, k = 24, 6
    # float16 overflows exp beyond 11.1, i.e. cosines above 0.55 at eps 0.05; float32 beyond
    # 88.7, so its scores are scaled up to +-5 (logits up to 100)
    scores = cosine_scores(b, k, 3, seed=1) * (1.0 if dtype == torch.float16 else 5.0)
    scores = scores.to(dtype)
    assert torch.isinf(torch.exp(scores / EPS)).any()  # the naive formula overflows in this dtype
    codes = sinkhorn(scores, EPS, 3)
    assert torch.isfinite(codes).all() and (codes >= 0).all()
    # normalisation: every sample's codes sum to 1 (exact after the last column step) ...
    assert torch.allclose(codes.sum(dim=1), torch.ones(b), atol=1e-5)
    # ... equal to the paper's algorithm run in float64 on the same (rounded) scores ...
    assert torch.allclose(codes.double(), naive_sinkhorn(scores.double().tolist(), EPS, 3), atol=1e-4)
    # ... and, iterated to convergence, every prototype receives B / K of the mass
    # (equipartition; logits this large converge slowly: within 1% after 300 iterations)
    converged = sinkhorn(scores, EPS, 300)
    assert torch.isfinite(converged).all()
    assert torch.allclose(converged.sum(dim=1), torch.ones(b), atol=1e-5)
    assert torch.allclose(converged.sum(dim=0), torch.full((k,), b / k), rtol=1e-2)


def naive_swav_loss(scores, codes, t):
    """-1/(A (V-1)) sum_a sum_{v != a} 1/B sum_b sum_k q_a[b,k] log softmax(s_v[b] / t)[k]."""
    v_count, b_count, k_count = scores.shape
    a_count = codes.shape[0]
    total = 0.0
    for a in range(a_count):
        for v in range(v_count):
            if v == a:
                continue
            for b in range(b_count):
                denom = sum(math.exp(scores[v, b, j].item() / t) for j in range(k_count))
                for k in range(k_count):
                    p = math.exp(scores[v, b, k].item() / t) / denom
                    total -= codes[a, b, k].item() * math.log(p) / b_count
    return total / (a_count * (v_count - 1))


def test_swav_loss_matches_swapped_prediction_formula():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(4, 3, 5, generator=g) * 2 - 1  # 4 crops, 3 images, 5 prototypes
    codes = torch.softmax(torch.randn(2, 3, 5, generator=g), dim=-1)
    for t in (0.1, 0.5):
        assert abs(swav_loss(scores, codes, t).item() - naive_swav_loss(scores, codes, t)) < 1e-5


def _tiny_swav(**overrides) -> SwAV:
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(width=8), 1, [0.286], [0.353])
    params = SwAV.Params(**{"num_prototypes": 12, "hidden_dim": 32, "projection_dim": 8, "num_small_crops": 2,
                            **overrides})
    return SwAV(encoder, params, AugmentParams(), 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def images(fmnist_small):
    train, _ = fmnist_small
    return torch.from_numpy(train.images[:16].copy()).permute(0, 3, 1, 2).contiguous()  # uint8 [16, 1, 28, 28]


def _step(method, opt, images, progress=0.0):
    out = method(images)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    method.after_optimizer_step(progress)
    return out["loss"].item()


def test_prototypes_frozen_for_first_iterations(images):
    method = _tiny_swav(freeze_prototypes_iters=3)
    # SGD with momentum and weight decay, as pretraining uses: zero gradients still decay
    # the weights, which the per-step normalisation must undo
    opt = torch.optim.SGD(param_groups(method), lr=0.5, momentum=0.9, weight_decay=1e-4)
    initial = F.normalize(method.prototypes.weight.detach(), dim=1).clone()
    encoder_before = [p.detach().clone() for p in method.encoder.parameters()]
    for _ in range(3):
        assert method.frozen()
        assert math.isfinite(_step(method, opt, images))
    assert torch.allclose(F.normalize(method.prototypes.weight.detach(), dim=1), initial, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, method.encoder.parameters()))  # the rest learns
    assert not method.frozen() and int(method.iteration) == 3
    _step(method, opt, images)
    _step(method, opt, images)
    assert not torch.allclose(F.normalize(method.prototypes.weight.detach(), dim=1), initial, atol=1e-4)


def test_prototypes_normalised_before_use(images):
    method = _tiny_swav()
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method(images)
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(12), atol=1e-6)


def test_codes_from_large_crops_only_and_queue_used_once_full(images, monkeypatch):
    rows = []

    def recording_sinkhorn(scores, epsilon, iterations):
        rows.append(scores.shape[0])
        return sinkhorn(scores, epsilon, iterations)

    monkeypatch.setattr(swav_module, "sinkhorn", recording_sinkhorn)
    method = _tiny_swav(queue_length=32, freeze_prototypes_iters=0)
    opt = torch.optim.SGD(param_groups(method), lr=0.1, momentum=0.9)
    for _ in range(3):
        assert math.isfinite(_step(method, opt, images))
    # one Sinkhorn per large crop (2 per step, not per small crop); the 32-row queue is
    # used from the third step of 16 images, when it is full
    assert rows == [16, 16, 16, 16, 48, 48]
    assert method.queue.shape == (2, 32, 8) and method.queue_filled == 32
    assert torch.allclose(method.queue.norm(dim=-1), torch.ones(2, 32), atol=1e-5)  # unit features


def _swav_from_params(default_params_dict, swav_section: dict, shared_encoder: dict | None = None) -> SwAV:
    """SwAV as pretrain.py builds it, from the repo's params.yaml with overrides."""
    from pipeline.config import parse_params
    from pipeline.modalities.encoders import build_encoder

    raw = {**default_params_dict, "swav": {**default_params_dict["swav"], **swav_section}}
    if shared_encoder:
        raw["encoder"] = {**raw["encoder"], **shared_encoder}
    params = parse_params(raw)
    manifest = {"channels": 1, "mean": [0.286], "std": [0.353], "image_size": 28}
    encoder = build_encoder(params.encoder_for("swav"), manifest)
    return SwAV(encoder, params.method_params["swav"], params.augment, 0, torch.device("cpu"))


@pytest.mark.parametrize("override", [{"encoder": {"arch": "vit"}, "small_crop_size": 10}, "shared"])
def test_vit_encoder_with_crops_its_patch_does_not_divide_is_a_user_error(default_params_dict, override):
    # 10 px crops and 4 px patches: the patch embedding would drop the crops' edge pixels
    from pipeline.errors import UserError

    swav_section, shared = (override, None) if override != "shared" else ({"small_crop_size": 10}, {"arch": "vit"})
    with pytest.raises(UserError, match=r"^swav.small_crop_size: 10 px does not split into the ViT's 4 px patches") as err:
        _swav_from_params(default_params_dict, swav_section, shared)
    assert "multiple of 4, e.g. 8 or 12" in str(err.value)


def test_vit_encoder_without_small_crops_trains(default_params_dict):
    # the fix the error names works: two 28 px crops only
    method = _swav_from_params(default_params_dict, {"encoder": {"arch": "vit"}, "num_small_crops": 0, "num_prototypes": 16})
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.isfinite(method.training_step(images)["loss"])
