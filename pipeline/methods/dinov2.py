"""DINOv2-style pretraining (Oquab et al., 2024, Section 4): DINO's image-level loss and
iBOT's patch-level loss on one shared head, the teacher's outputs centred by Sinkhorn-Knopp
(SwAV's equipartition, in place of DINO's running mean), and the KoLeo regulariser, which
spreads the student's [CLS] features of a batch uniformly. At the scale these machines allow:
a small ViT, no register tokens, no stochastic depth, no high-resolution phase.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.methods.ibot import MaskedDistillation, cross_view_ce, masked_patch_ce
from pipeline.methods._masking import upcast
from pipeline.registry import METHODS


def _sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    if dist.world_size() == 1:
        return x
    return dist.gather_with_grad(x[None]).sum(dim=0)


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: torch.Tensor | float, iterations: int,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """DINOv2's Sinkhorn-Knopp centring of teacher outputs over the global batch.

    logits: ``[B, K]`` of this rank; weight: optional bool ``[B]`` of the rows that take part
    (the masked patches: DINOv2 centres only those). ``Q = exp(logits / t)`` on the rows that
    take part; each iteration makes every prototype's mass ``1/K`` then every row's ``1/B_all``
    (B_all: rows taking part on all ranks). Returns ``[B, K]`` float targets ``B_all * Q``:
    rows that take part sum to 1, the others are 0. Computed in log space (no overflow).
    """
    log_q = upcast(logits) / temperature  # [B, K]
    k = logits.shape[1]
    keep = torch.ones(logits.shape[0], dtype=torch.bool, device=logits.device) if weight is None else weight
    keep = keep[:, None]
    neg_inf = torch.full((), -math.inf, device=logits.device)
    log_q = torch.where(keep, log_q, neg_inf)
    log_b = _sum_over_ranks(keep.sum().float()).log()
    for _ in range(iterations):
        col = torch.logsumexp(log_q, dim=0, keepdim=True)  # [1, K] this rank's prototype masses
        if dist.world_size() > 1:
            col = torch.logsumexp(dist.gather_with_grad(col), dim=0, keepdim=True)
        log_q = log_q - col - math.log(k)
        log_q = torch.where(keep, log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - log_b, neg_inf)
    return torch.where(keep, torch.exp(log_q + log_b), torch.zeros((), device=logits.device))


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimator (Sablayrolles et al., 2019), DINOv2's Eq. 1:
    ``-1/n sum_i log(min_{j != i} ||x_i - x_j||)`` on L2-normalised rows of ``x [n, D]``."""
    x = F.normalize(upcast(x), dim=-1, eps=eps)
    dots = x @ x.T
    dots = dots - 3 * torch.eye(x.shape[0], dtype=x.dtype, device=x.device)  # never one's own neighbour (cosines >= -1)
    nearest = dots.argmax(dim=1)  # on the device: no host read
    distance = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distance + eps).mean()


def dinov2_loss(student_cls: torch.Tensor, student_patch: torch.Tensor, cls_targets: torch.Tensor,
                patch_targets: torch.Tensor, mask: torch.Tensor, student_cls_tokens: torch.Tensor,
                student_temp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(L_DINO, L_iBOT, L_KoLeo)``; the objective weights them (paper: 1, 1, 0.1).

    student_cls ``[V, B, K]`` (G global crops first), student_patch ``[G, B, L, K]``,
    cls_targets ``[G, B, K]`` and patch_targets ``[G, B, L, K]`` (Sinkhorn-centred teacher
    probabilities), mask bool ``[G, B, L]``, student_cls_tokens ``[G, B, D]`` (backbone [CLS]
    of the global crops). KoLeo is computed per global crop and summed, as in DINOv2's code.
    """
    koleo = sum(koleo_loss(c) for c in student_cls_tokens)
    return (cross_view_ce(student_cls, cls_targets, student_temp),
            masked_patch_ce(student_patch, patch_targets, mask, student_temp), koleo)


@METHODS.register
class DINOv2(MaskedDistillation):
    name = "dinov2"

    class Params(MaskedDistillation.Params):
        sinkhorn_iterations: int = Field(3, ge=1)
        dino_loss_weight: float = Field(1.0, ge=0)
        ibot_loss_weight: float = Field(1.0, ge=0)
        koleo_loss_weight: float = Field(0.1, ge=0)
        local_crop_scale: list[float] = Field(default_factory=lambda: [0.05, 0.32], min_length=2, max_length=2)  # paper

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        p, o = self.params, self.outputs(images)
        tt, _ = self.teacher_temperatures()
        k = p.out_dim
        cls_targets = sinkhorn_knopp(o["teacher_cls"].reshape(-1, k), tt, p.sinkhorn_iterations).view_as(o["teacher_cls"])
        mask = o["mask"]
        patch_targets = sinkhorn_knopp(o["teacher_patch"].reshape(-1, k), tt, p.sinkhorn_iterations,
                                       mask.reshape(-1)).view_as(o["teacher_patch"])
        dino, ibot, koleo = dinov2_loss(o["student_cls"], o["student_patch"], cls_targets, patch_targets, mask,
                                        o["student_cls_tokens"], p.student_temp)
        loss = p.dino_loss_weight * dino + p.ibot_loss_weight * ibot + p.koleo_loss_weight * koleo
        return {"loss": loss, "dino_loss": dino.detach(), "ibot_loss": ibot.detach(), "koleo_loss": koleo.detach()}
