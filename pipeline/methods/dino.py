"""DINO (Caron et al., 2021): self-distillation with no labels.

A student (encoder + head) sees every crop and learns to match, with cross-entropy, the
output distribution of a teacher that sees only the 2 global crops. The teacher is an EMA
of the student and is never optimized; its outputs are centered (a running mean is
subtracted) and sharpened (a low temperature), which together keep it from collapsing.
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
from pipeline.registry import METHODS
from pipeline.models.heads import mlp

N_GLOBAL = 2  # the teacher sees the 2 global crops
PREPARE_CHUNK = 256  # images per teacher forward when the center is initialised


class DinoHead(nn.Module):
    """MLP to a bottleneck, L2 normalisation, then a weight-normalised linear layer.

    The last layer is weight normalisation with the gain fixed to 1 (the paper's
    ``norm_last_layer``): every output unit's weight row is used at unit length.
    ``[N, in_dim] -> [N, out_dim]`` logits.
    """

    def __init__(self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int):
        super().__init__()
        self.mlp = mlp(in_dim, hidden_dim, bottleneck_dim, layers=3)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor,
              student_temp: float, teacher_temp: float | torch.Tensor) -> torch.Tensor:
    """Cross-entropy between teacher and student distributions over all pairs of different crops.

    student: ``[V, B, K]`` student logits of V crops of B images, the G global crops first.
    teacher: ``[G, B, K]`` teacher logits of the G global crops. center: ``[K]``.
    Teacher targets are ``softmax((teacher - center) / teacher_temp)``, student predictions
    ``softmax(student / student_temp)``; for every pair (g, v) with v != g the
    cross-entropy is averaged over the batch, then over the G * (V - 1) pairs.
    """
    g, v = teacher.shape[0], student.shape[0]
    targets = F.softmax((teacher.float() - center.float()) / teacher_temp, dim=-1).detach()  # [G, B, K]
    log_p = F.log_softmax(student.float() / student_temp, dim=-1)  # [V, B, K]
    # elementwise products in float32: autocast would run an einsum/matmul in bfloat16
    ce = torch.stack([-(targets[i] * log_p).sum(-1).mean(-1) for i in range(g)])  # [G, V]
    # the pairs v != g in row order, by slicing (a boolean mask would be a host sync on CUDA)
    different = torch.cat([torch.cat([ce[i, :i], ce[i, i + 1:]]) for i in range(g)])
    return different.sum() / (g * (v - 1))


@METHODS.register
class DINO(MomentumMethod):
    name = "dino"
    ema_targets = {"teacher_encoder": "encoder", "teacher_head": "head"}

    class Params(Strict):
        out_dim: int = Field(4096, ge=2)
        hidden_dim: int = Field(2048, ge=1)
        bottleneck_dim: int = Field(256, ge=1)
        student_temp: float = Field(0.1, gt=0)
        teacher_temp: float = Field(0.04, gt=0)
        warmup_teacher_temp: float = Field(0.04, gt=0)
        warmup_teacher_temp_fraction: float = Field(0.0, ge=0, le=1)  # of training; 0 = no warmup
        center_momentum: float = Field(0.9, ge=0, lt=1)
        momentum_teacher: float = Field(0.99, ge=0, le=1)
        momentum_teacher_final: float = Field(1.0, ge=0, le=1)
        num_local_crops: int = Field(6, ge=0)
        local_crop_size: int = Field(12, ge=4)
        local_crop_scale: list[float] = Field(default_factory=lambda: [0.05, 0.4], min_length=2, max_length=2)
        # Ours: BatchNorm's running statistics mix the 28 px global and the small local crops;
        # re-estimate them on whole images after training (the evaluations feed whole images).
        whole_image_bn: bool = True

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.require_crops_fit_encoder(params.num_local_crops, params.local_crop_size, "dino.num_local_crops", "dino.local_crop_size")
        self.head = DinoHead(encoder.feature_dim, params.hidden_dim, params.bottleneck_dim, params.out_dim)
        self.make_targets()
        self.register_buffer("center", torch.zeros(params.out_dim))
        # training progress (0..1) after the last optimizer step: drives the teacher temperature
        self.register_buffer("progress", torch.zeros(()))
        self._batch_center: torch.Tensor | None = None  # applied to `center` after the optimizer step

    @torch.no_grad()
    def prepare(self, sample: torch.Tensor) -> None:
        """Start the center at the teacher's mean output on a data sample.

        The paper starts it at zero; an EMA with momentum 0.9 then needs ~20 steps to
        reach the outputs' mean, and meanwhile the targets lose their common component and
        the loss climbs towards log K. Starting at the mean removes that warm-up transient.
        """
        was_training = self.training
        self.train()  # the teacher as training runs it: BatchNorm on batch statistics
        outs = [self.teacher_head(self.teacher_encoder(to_float(chunk))).float()
                for chunk in sample.split(PREPARE_CHUNK)]
        self.center.copy_(torch.cat(outs).mean(dim=0))
        self.train(was_training)

    def finalize(self, sample: torch.Tensor) -> None:
        if self.params.whole_image_bn:
            self.reestimate_batchnorm(sample)

    def teacher_temperature(self) -> float | torch.Tensor:
        """Linear warmup from ``warmup_teacher_temp`` over the first fraction of training.
        With a warmup, a 0-dim tensor computed from the ``progress`` buffer on the device
        (reading it on the host would sync every step); without, the constant."""
        start, end = self.params.warmup_teacher_temp, self.params.teacher_temp
        frac = self.params.warmup_teacher_temp_fraction
        if frac == 0:
            return end
        p = self.progress
        return torch.where(p < frac, start + (end - start) * p / frac, torch.full_like(p, end))

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        p, b = self.params, images.shape[0]
        global_crops = torch.cat([self.views(images, view=v) for v in range(N_GLOBAL)])  # [2B, C, H, W]
        feats = [self.encoder(global_crops)]  # one encoder forward per resolution
        if p.num_local_crops:
            local = torch.cat([self.views(images, out_size=p.local_crop_size, scale=tuple(p.local_crop_scale), view=N_GLOBAL)
                               for _ in range(p.num_local_crops)])  # [nB, C, s, s]
            feats.append(self.encoder(local))
        student = self.head(torch.cat(feats)).view(-1, b, p.out_dim)  # [V, B, K]
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_encoder(global_crops)).float().view(N_GLOBAL, b, p.out_dim)
            # batch mean over every rank (equal batches): the mean of the ranks' means
            self._batch_center = dist.gather_with_grad(teacher.mean(dim=(0, 1))[None]).mean(dim=0)
        loss = dino_loss(student, teacher, self.center, p.student_temp, self.teacher_temperature())
        return {"loss": loss}

    def momentum(self, progress: float) -> float:
        return cosine_tau(self.params.momentum_teacher, self.params.momentum_teacher_final, progress)

    @torch.no_grad()
    def after_optimizer_step(self, progress: float) -> None:
        super().after_optimizer_step(progress)  # teacher EMA
        p = self.params
        if self._batch_center is not None:
            self.center.mul_(p.center_momentum).add_(self._batch_center, alpha=1 - p.center_momentum)
            self._batch_center = None
        self.progress.fill_(progress)
