import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import AugmentParams, EncoderParams
from pipeline.methods.dino import DINO, DinoHead, dino_loss
from pipeline.models.encoder import Encoder
from pipeline.train.optim import param_groups


def naive_dino_loss(student, teacher, center, ts, tt):
    """1/(G (V-1)) sum_g sum_{v != g} 1/B sum_b sum_k -P_t[g,b,k] log P_s[v,b,k], with
    P_t = softmax((t - c) / tt) and P_s = softmax(s / ts), written out with loops."""
    g_count, b_count, k_count = teacher.shape
    v_count = student.shape[0]
    total = 0.0
    for g in range(g_count):
        for v in range(v_count):
            if v == g:
                continue
            for b in range(b_count):
                t_den = sum(math.exp((teacher[g, b, j] - center[j]).item() / tt) for j in range(k_count))
                s_den = sum(math.exp(student[v, b, j].item() / ts) for j in range(k_count))
                for k in range(k_count):
                    p_t = math.exp((teacher[g, b, k] - center[k]).item() / tt) / t_den
                    p_s = math.exp(student[v, b, k].item() / ts) / s_den
                    total -= p_t * math.log(p_s) / b_count
    return total / (g_count * (v_count - 1))


def test_dino_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    student = torch.rand(4, 3, 6, generator=g) * 2 - 1  # 2 global + 2 local crops, 3 images, K=6
    teacher = torch.rand(2, 3, 6, generator=g) * 2 - 1
    center = torch.rand(6, generator=g) * 0.2
    for ts, tt in ((0.1, 0.04), (0.5, 0.2)):
        ours = dino_loss(student, teacher, center, ts, tt).item()
        assert abs(ours - naive_dino_loss(student, teacher, center, ts, tt)) < 1e-4 * max(1.0, abs(ours))


def test_dino_loss_gradient_reaches_student_only():
    student = torch.randn(3, 4, 8, requires_grad=True)
    teacher = torch.randn(2, 4, 8, requires_grad=True)
    dino_loss(student, teacher, torch.zeros(8), 0.1, 0.04).backward()
    assert student.grad is not None and teacher.grad is None


def test_head_last_layer_is_weight_normalised():
    head = DinoHead(16, 32, 8, 20)
    with torch.no_grad():
        head.last_layer.weight.mul_(5.0)  # the row norms do not matter, only their directions
    out = head(torch.randn(6, 16))
    assert out.shape == (6, 20) and out.abs().max() <= 1 + 1e-5  # cosine logits


def _tiny_dino(**overrides) -> DINO:
    torch.manual_seed(0)
    encoder = Encoder(EncoderParams(width=8), 1, [0.286], [0.353])
    params = DINO.Params(**{"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "num_local_crops": 2, **overrides})
    return DINO(encoder, params, AugmentParams(), 0, torch.device("cpu"))


@pytest.fixture(scope="module")
def images(fmnist_small):
    train, _ = fmnist_small
    return torch.from_numpy(train.images[:16].copy()).permute(0, 3, 1, 2).contiguous()  # uint8 [16, 1, 28, 28]


def test_teacher_not_optimized():
    method = _tiny_dino()
    optimized = {id(p) for p in method.optimized_parameters()}
    teacher = [p for m in (method.teacher_encoder, method.teacher_head) for p in m.parameters()]
    assert teacher and not any(id(p) in optimized for p in teacher)
    assert not any(p.requires_grad for p in teacher)
    student = [p for m in (method.encoder, method.head) for p in m.parameters()]
    assert {id(p) for p in student} == optimized


def test_center_and_teacher_move_only_after_optimizer_step(images):
    method = _tiny_dino(momentum_teacher=0.9)  # a visible EMA step
    method.prepare(images)

    def teacher_params():
        return [p.detach().clone() for m in (method.teacher_encoder, method.teacher_head) for p in m.parameters()]

    opt = torch.optim.SGD(param_groups(method, params=method.optimized_parameters()), lr=0.5, momentum=0.9)
    center0, teacher0 = method.center.clone(), teacher_params()

    out = method(images)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    # the student moved, the teacher and the center did not
    assert torch.equal(method.center, center0)
    assert all(torch.equal(a, b) for a, b in zip(teacher0, teacher_params()))
    batch_center = method._batch_center.clone()

    method.after_optimizer_step(0.0)
    # center <- 0.9 center + 0.1 batch mean of the teacher outputs
    assert torch.allclose(method.center, 0.9 * center0 + 0.1 * batch_center, atol=1e-6)
    # teacher <- tau teacher + (1 - tau) student, tau = 0.9 at progress 0
    student = [p.detach() for m in (method.encoder, method.head) for p in m.parameters()]
    for t_old, t_new, s in zip(teacher0, teacher_params(), student):
        assert torch.allclose(t_new, 0.9 * t_old + 0.1 * s, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, teacher_params()))


def test_prepare_starts_center_at_teacher_mean(images):
    method = _tiny_dino()
    method.prepare(images)
    with torch.no_grad():
        mean = method.teacher_head(method.teacher_encoder(images.float() / 255)).mean(dim=0)
    assert torch.allclose(method.center, mean, atol=1e-5)


def test_teacher_momentum_reaches_one_and_temperature_warms_up(images):
    method = _tiny_dino(warmup_teacher_temp_fraction=0.5, warmup_teacher_temp=0.02, teacher_temp=0.06)
    assert method.teacher_temperature() == pytest.approx(0.02)
    method.after_optimizer_step(0.25)
    assert method.teacher_temperature() == pytest.approx(0.04)
    method.after_optimizer_step(0.75)
    assert method.teacher_temperature() == pytest.approx(0.06)
    # at progress 1 the cosine schedule gives tau = 1: the teacher stops moving
    before = [p.clone() for p in method.teacher_head.parameters()]
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(1.0)
    method.after_optimizer_step(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, method.teacher_head.parameters()))


def test_multi_crop_student_sees_all_crops(images):
    method = _tiny_dino(num_local_crops=3)
    seen = []
    method.head.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    out = method(images)
    assert math.isfinite(out["loss"].item())
    assert seen == [(2 + 3) * 16]  # 2 global + 3 local crops of 16 images
    out["loss"].backward()
    assert all(p.grad is None for p in method.teacher_head.parameters())
    assert F.normalize(method.head.last_layer.weight.grad, dim=1).isfinite().all()


@pytest.mark.parametrize("whole_image_bn", [True, False])
def test_finalize_reestimates_batchnorm_on_whole_images(images, whole_image_bn):
    """Training mixes global and small local crops in BatchNorm's running statistics; finalize
    replaces them with whole-image statistics (the inputs the evaluations use)."""
    method = _tiny_dino(whole_image_bn=whole_image_bn)
    method.train()
    method(images)  # global + local crops move the running statistics
    bn = next(m for m in method.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    after_training = bn.running_mean.clone()
    with torch.no_grad():
        first_bn_input = method.encoder.backbone.stem[0](method.encoder.normalise(images.float() / 255))
    method.finalize(images)
    if whole_image_bn:
        torch.testing.assert_close(bn.running_mean, first_bn_input.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(bn.running_mean, after_training)


def _dino_from_params(default_params_dict, dino_section: dict, shared_encoder: dict | None = None) -> DINO:
    """DINO as pretrain.py builds it, from the repo's params.yaml with overrides."""
    from pipeline.config import parse_params
    from pipeline.modalities.encoders import build_encoder

    raw = {**default_params_dict, "dino": {**default_params_dict["dino"], **dino_section}}
    if shared_encoder:
        raw["encoder"] = {**raw["encoder"], **shared_encoder}
    params = parse_params(raw)
    manifest = {"channels": 1, "mean": [0.286], "std": [0.353], "image_size": 28}
    encoder = build_encoder(params.encoder_for("dino"), manifest)
    return DINO(encoder, params.method_params["dino"], params.augment, 0, torch.device("cpu"))


@pytest.mark.parametrize("override", [{"encoder": {"arch": "vit"}, "local_crop_size": 10}, "shared"])
def test_vit_encoder_with_crops_its_patch_does_not_divide_is_a_user_error(default_params_dict, override):
    # 10 px crops and 4 px patches: the patch embedding would drop the crops' edge pixels
    from pipeline.errors import UserError

    dino_section, shared = (override, None) if override != "shared" else ({"local_crop_size": 10}, {"arch": "vit"})
    with pytest.raises(UserError, match=r"^dino.local_crop_size: 10 px does not split into the ViT's 4 px patches") as err:
        _dino_from_params(default_params_dict, dino_section, shared)
    assert "multiple of 4, e.g. 8 or 12" in str(err.value)


def test_vit_encoder_without_local_crops_trains(default_params_dict):
    # the fix the error names works: the two 28 px global crops only
    method = _dino_from_params(default_params_dict, {"encoder": {"arch": "vit"}, "num_local_crops": 0, "out_dim": 32,
                                                     "hidden_dim": 32, "bottleneck_dim": 16})
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.isfinite(method.training_step(images)["loss"])
