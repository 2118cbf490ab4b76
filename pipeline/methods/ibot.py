"""iBOT (Zhou et al., 2022): image BERT pre-training with an online tokenizer.

DINO's self-distillation of the [CLS] token across views, plus masked image modeling in
which the "tokenizer" is the teacher itself: the student sees a global crop with blockwise
masked patches (their embeddings replaced by a learned mask token) and predicts, at every
masked position, the teacher's output distribution for that patch of the unmasked crop. The
teacher is an EMA of the student; its [CLS] and patch outputs are centred (separate running
means) and sharpened.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline import dist
from pipeline.config import Strict
from pipeline.modalities.image.views import to_float
from pipeline.methods._ema import MomentumMethod, cosine_tau
from pipeline.methods._masking import block_mask, masked_image_ratios, require_vit, upcast
from pipeline.registry import METHODS

N_GLOBAL = 2  # the teacher sees the 2 global crops; only they are masked


class TokenHead(nn.Module):
    """The DINO/iBOT ViT head, applied to every token: a 3-layer GELU MLP (no BatchNorm, as
    the ViT recipe) to a bottleneck, L2 normalisation, a weight-normalised linear layer with
    its gain fixed to 1. ``[..., in_dim] -> [..., out_dim]`` logits."""

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # the reference's trunc_normal(0.02) init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))


def cross_view_ce(student: torch.Tensor, targets: torch.Tensor, student_temp: float) -> torch.Tensor:
    """DINO's [CLS] loss: cross-entropy between target distributions and student predictions
    over every pair of different crops.

    student: ``[V, B, K]`` logits of V crops (the G target crops first); targets: ``[G, B, K]``
    probabilities. ``1/(G(V-1)) sum_g sum_{v != g} 1/B sum_b -targets[g,b] . log_softmax(student[v,b] / t_s)``.
    """
    g, v = targets.shape[0], student.shape[0]
    log_p = F.log_softmax(upcast(student) / student_temp, dim=-1)  # [V, B, K]
    ce = torch.stack([-(upcast(targets[i]) * log_p).sum(-1).mean(-1) for i in range(g)])  # [G, V]
    different = 1 - torch.eye(g, v, dtype=log_p.dtype, device=student.device)  # a float weight, not boolean indexing
    return (ce * different).sum() / (g * (v - 1))


def masked_patch_ce(student: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, student_temp: float) -> torch.Tensor:
    """iBOT's patch loss (its Eq. 2): per image, the mean over its masked patches of the
    cross-entropy between the target and the student's prediction at that position; then the
    mean over all images of all crops (an image with no masked patch adds 0, as in iBOT's
    and DINOv2's code).

    student: ``[G, B, L, K]`` logits; targets: ``[G, B, L, K]`` probabilities; mask: bool ``[G, B, L]``.
    """
    ce = -(upcast(targets) * F.log_softmax(upcast(student) / student_temp, dim=-1)).sum(-1)  # [G, B, L]
    m = mask.to(ce.dtype)
    return ((ce * m).sum(-1) / m.sum(-1).clamp(min=1)).mean()


def ibot_loss(student_cls: torch.Tensor, student_patch: torch.Tensor, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor,
              mask: torch.Tensor, center_cls: torch.Tensor, center_patch: torch.Tensor, student_temp: float,
              teacher_temp: torch.Tensor | float, teacher_patch_temp: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """iBOT's two losses, ``(L_[CLS], L_MIM)``; the objective is ``lambda1 L_[CLS] + lambda2 L_MIM``.

    student_cls ``[V, B, K]`` (G global crops first), student_patch ``[G, B, L, K]`` (masked
    crops), teacher_cls ``[G, B, K]``, teacher_patch ``[G, B, L, K]`` (unmasked crops), mask bool
    ``[G, B, L]``, centres ``[K]``. Teacher targets are ``softmax((t - c) / t_t)``.
    """
    t_cls = F.softmax((upcast(teacher_cls) - center_cls) / teacher_temp, dim=-1).detach()
    t_patch = F.softmax((upcast(teacher_patch) - center_patch) / teacher_patch_temp, dim=-1).detach()
    return cross_view_ce(student_cls, t_cls, student_temp), masked_patch_ce(student_patch, t_patch, mask, student_temp)


PREPARE_CHUNK = 256  # images per teacher forward when the centres are initialised


def warmup_temperature(progress: torch.Tensor, start: float, end: float, fraction: float) -> torch.Tensor:
    """Linear warmup ``start -> end`` over the first ``fraction`` of training, then ``end``:
    a tensor computed from the ``progress`` buffer (no host read, resumes exactly)."""
    if fraction <= 0:
        return torch.full_like(progress, end)
    return torch.where(progress < fraction, start + (end - start) * progress / fraction, torch.full_like(progress, end))


class MaskedDistillation(MomentumMethod):
    """What iBOT and DINOv2-style share: a ViT student with a mask token, one head on every
    token (the papers' shared head), an EMA teacher of both, blockwise masks on the global
    crops, optional local crops for the [CLS] loss, a progress buffer for the temperatures."""

    ema_targets = {"teacher_encoder": "encoder", "teacher_head": "head"}

    class Params(Strict):
        out_dim: int = Field(1024, ge=2)
        hidden_dim: int = Field(512, ge=1)
        bottleneck_dim: int = Field(256, ge=1)
        student_temp: float = Field(0.1, gt=0)
        teacher_temp: float = Field(0.07, gt=0)
        warmup_teacher_temp: float = Field(0.04, gt=0)
        warmup_teacher_temp_fraction: float = Field(0.1, ge=0, le=1)  # of training (paper: 30 of 300 epochs)
        momentum_teacher: float = Field(0.99, ge=0, le=1)
        momentum_teacher_final: float = Field(1.0, ge=0, le=1)
        mask_ratio: list[float] = Field(default_factory=lambda: [0.1, 0.5], min_length=2, max_length=2)
        mask_probability: float = Field(0.5, ge=0, le=1)
        min_block_fraction: float = Field(0.0816, gt=0, le=1)
        min_aspect: float = Field(0.3, gt=0, le=1)
        mask_tries: int = Field(10, ge=1)
        num_local_crops: int = Field(0, ge=0)
        local_crop_size: int = Field(12, ge=4)
        local_crop_scale: list[float] = Field(default_factory=lambda: [0.05, 0.4], min_length=2, max_length=2)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        require_vit(encoder, self.name)
        self.require_crops_fit_encoder(params.num_local_crops, params.local_crop_size, f"{self.name}.num_local_crops",
                                       f"{self.name}.local_crop_size")
        vit = encoder.backbone
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.dim))  # student only: the teacher sees whole crops
        self.head = TokenHead(vit.dim, params.hidden_dim, params.bottleneck_dim, params.out_dim)
        self.make_targets()
        self.register_buffer("progress", torch.zeros(()))  # after the last optimizer step: drives the temperatures

    def masks(self, n: int, device: torch.device) -> torch.Tensor:
        """bool ``[n, L]``: blockwise masks on a random half (``mask_probability``) of the crops."""
        p, grid = self.params, self.encoder.backbone.grid
        ratios = masked_image_ratios(n, tuple(p.mask_ratio), p.mask_probability, self.views.gen, device)
        return block_mask(n, grid, ratios, p.min_block_fraction * grid * grid, p.min_aspect, p.mask_tries, self.views.gen, device)

    def outputs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 ``[B, C, H, W]`` -> student/teacher head outputs (logits, float32):
        ``student_cls [V, B, K]``, ``student_patch [G, B, L, K]``, ``teacher_cls [G, B, K]``,
        ``teacher_patch [G, B, L, K]``, ``mask [G, B, L]`` and the student's backbone [CLS]
        tokens ``student_cls_tokens [G, B, D]`` (DINOv2's KoLeo)."""
        p, b = self.params, images.shape[0]
        vit = self.encoder.backbone
        x = self.encoder.normalise(torch.cat([self.views(images, view=v) for v in range(N_GLOBAL)]))  # [GB, C, H, W]
        mask = self.masks(x.shape[0], x.device)  # [GB, L]
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), vit.embed(x))
        h = vit.encode(tokens + vit.patch_pos)  # [GB, 1 + L, D]
        cls_tokens = [h[:, 0]]
        if p.num_local_crops:  # local crops: [CLS] only, unmasked (one forward for all of them)
            local = torch.cat([self.views(images, out_size=p.local_crop_size, scale=tuple(p.local_crop_scale), view=N_GLOBAL)
                               for _ in range(p.num_local_crops)])
            cls_tokens.append(vit.tokens(self.encoder.normalise(local))[:, 0])
        student_cls = self.head(torch.cat(cls_tokens)).float().view(-1, b, p.out_dim)
        student_patch = self.head(h[:, 1:]).float()
        with torch.no_grad():
            t = self.teacher_head(self.teacher_encoder.backbone.tokens(x)).float()  # [GB, 1 + L, K]
        g = N_GLOBAL
        return {"student_cls": student_cls, "student_patch": student_patch.view(g, b, -1, p.out_dim),
                "teacher_cls": t[:, 0].view(g, b, -1), "teacher_patch": t[:, 1:].reshape(g, b, -1, p.out_dim),
                "mask": mask.view(g, b, -1), "student_cls_tokens": h[:, 0].view(g, b, -1)}

    def teacher_temperatures(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        tt = warmup_temperature(self.progress, p.warmup_teacher_temp, p.teacher_temp, p.warmup_teacher_temp_fraction)
        return tt, tt

    def momentum(self, progress: float) -> float:
        return cosine_tau(self.params.momentum_teacher, self.params.momentum_teacher_final, progress)

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        super().after_optimizer_step(progress)  # teacher EMA
        self.progress.fill_(progress)


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """``[..., K]`` -> ``[K]``: the mean over every leading index on every rank (equal shapes per rank)."""
    local = x.reshape(-1, x.shape[-1]).mean(dim=0)
    return dist.gather_with_grad(local[None]).mean(dim=0)


@METHODS.register
class IBOT(MaskedDistillation):
    name = "ibot"

    class Params(MaskedDistillation.Params):
        teacher_patch_temp: float = Field(0.07, gt=0)
        warmup_teacher_patch_temp: float = Field(0.04, gt=0)
        center_momentum: float = Field(0.9, ge=0, lt=1)
        center_momentum_patch: float = Field(0.9, ge=0, lt=1)
        lambda_cls: float = Field(1.0, ge=0)
        lambda_patch: float = Field(1.0, ge=0)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.register_buffer("center", torch.zeros(params.out_dim))
        self.register_buffer("center_patch", torch.zeros(params.out_dim))
        self._batch_centers: tuple[torch.Tensor, torch.Tensor] | None = None  # applied after the optimizer step

    @torch.no_grad()
    def prepare(self, sample: torch.Tensor) -> None:
        """Start both centres at the teacher's mean outputs on ``sample`` (uint8 ``[N, C, H, W]``).

        The paper starts them at zero; with momentum 0.9 they need ~20 steps to reach the outputs'
        mean, and meanwhile the targets keep their common component (as this repo's DINO does)."""
        outs = [self.teacher_head(self.teacher_encoder.backbone.tokens(self.teacher_encoder.normalise(to_float(chunk)))).float()
                for chunk in sample.split(PREPARE_CHUNK)]  # [n, 1 + L, K] each
        t = torch.cat(outs)
        self.center.copy_(global_mean(t[:, 0]))
        self.center_patch.copy_(global_mean(t[:, 1:]))

    def teacher_temperatures(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        frac = p.warmup_teacher_temp_fraction
        return (warmup_temperature(self.progress, p.warmup_teacher_temp, p.teacher_temp, frac),
                warmup_temperature(self.progress, p.warmup_teacher_patch_temp, p.teacher_patch_temp, frac))

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        p, o = self.params, self.outputs(images)
        tt, tpt = self.teacher_temperatures()
        cls_loss, patch_loss = ibot_loss(o["student_cls"], o["student_patch"], o["teacher_cls"], o["teacher_patch"], o["mask"],
                                         self.center, self.center_patch, p.student_temp, tt, tpt)
        # centres: means over every rank's teacher outputs ([CLS]; all patch tokens, as iBOT's code)
        self._batch_centers = (global_mean(o["teacher_cls"]), global_mean(o["teacher_patch"]))
        return {"loss": p.lambda_cls * cls_loss + p.lambda_patch * patch_loss, "cls_loss": cls_loss.detach(),
                "patch_loss": patch_loss.detach()}

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        super().after_optimizer_step(progress)
        p = self.params
        if self._batch_centers is not None:
            cls, patch = self._batch_centers
            self.center.mul_(p.center_momentum).add_(cls, alpha=1 - p.center_momentum)
            self.center_patch.mul_(p.center_momentum_patch).add_(patch, alpha=1 - p.center_momentum_patch)
            self._batch_centers = None
