"""MSN (Assran et al., 2022): masked Siamese networks.

An anchor view with randomly dropped patches (the ViT encodes only the kept ones) must match
the prototype assignment of an unmasked target view, which an EMA target network computes.
Both are soft assignments to K learnable prototypes (softmax of cosines over a temperature);
the target's is sharpened (a lower temperature) and, as the reference code, balanced by
Sinkhorn-Knopp. Mean-entropy maximisation (the entropy of the batch's average anchor
prediction, over every rank) keeps the prototypes in use: no collapse onto one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._ema import MomentumMethod
from pipeline.methods._masking import require_vit, upcast
from pipeline.registry import METHODS
from pipeline.methods.swav import sinkhorn
from pipeline.models.heads import mlp


def msn_loss(anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, temperature: float,
             sharpen_temperature: float, sinkhorn_iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MSN's objective (its Eq. 3 and 4), ``(cross-entropy, me-max)``; the loss is ``ce + lambda * me_max``.

    anchors: ``[V, B, D]`` (V anchor views of B images), targets: ``[B, D]``, prototypes:
    ``[K, D]``; all are L2-normalised here. ``p = softmax(z . q / tau)`` for anchors and
    targets; the target's is sharpened, ``p^(1/T) / sum p^(1/T)``, then (``sinkhorn_iterations``
    > 0) Sinkhorn-balanced over the global batch, and never back-propagated. ce is
    ``1/(VB) sum_{v,b} H(target_b, p_{v,b})``; me_max is ``log K - H(mean_{v,b} p_{v,b})``
    with the mean over every rank's anchors (>= 0, 0 when all prototypes are used evenly).
    """
    z = F.normalize(upcast(anchors), dim=-1)
    q = F.normalize(upcast(prototypes), dim=-1)
    log_p = F.log_softmax(z @ q.T / temperature, dim=-1)  # [V, B, K]
    with torch.no_grad():
        t = F.normalize(upcast(targets), dim=-1) @ q.T / temperature  # [B, K]
        log_sharp = F.log_softmax(t / sharpen_temperature, dim=-1)  # = log(p^(1/T) / sum p^(1/T))
        target = sinkhorn(log_sharp, 1.0, sinkhorn_iterations) if sinkhorn_iterations else log_sharp.exp()
    ce = -(target * log_p).sum(-1).mean()
    mean_p = log_p.exp().reshape(-1, q.shape[0]).mean(dim=0)  # [K] this rank's
    mean_p = dist.gather_with_grad(mean_p[None]).mean(dim=0)  # every rank's (equal batches)
    me_max = math.log(q.shape[0]) + (mean_p * torch.log(mean_p)).sum()
    return ce, me_max


@METHODS.register
class MSN(MomentumMethod):
    name = "msn"
    ema_targets = {"target_encoder": "encoder", "target_projector": "projector"}

    class Params(Strict):
        num_prototypes: int = Field(1024, ge=2)  # reference config for ViT-S/16
        hidden_dim: int = Field(512, ge=1)  # reference 2048; CPU-sized
        output_dim: int = Field(256, ge=1)  # reference
        temperature: float = Field(0.1, gt=0)  # reference: tau 0.1
        sharpen_temperature: float = Field(0.25, gt=0)  # reference: T 0.25
        me_max_weight: float = Field(1.0, ge=0)  # reference: memax_weight 1
        sinkhorn_iterations: int = Field(3, ge=0)  # reference: use_sinkhorn true (3 iterations); 0 = off
        patch_drop: float = Field(0.15, ge=0, lt=1)  # reference for ViT-S/16 (0.3 ViT-B, 0.7 ViT-L/7)
        num_anchor_views: int = Field(1, ge=1)  # reference: rand_views 1 (global size, patches dropped)
        num_focal_views: int = Field(0, ge=0)  # reference: 10 focal views of 96 px; a ViT here needs interpolated positions
        focal_crop_size: int = Field(12, ge=4)
        focal_crop_scale: list[float] = Field(default_factory=lambda: [0.05, 0.3], min_length=2, max_length=2)  # reference
        momentum: float = Field(0.99, ge=0, le=1)  # reference 0.996 for ~10^5 steps; 0.99 for CPU runs of ~10^3
        momentum_final: float = Field(1.0, ge=0, le=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        require_vit(encoder, self.name)
        self.require_crops_fit_encoder(params.num_focal_views, params.focal_crop_size, "msn.num_focal_views",
                                       "msn.focal_crop_size")
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.output_dim, layers=3)
        self.prototypes = nn.Parameter(torch.empty(params.num_prototypes, params.output_dim))
        nn.init.uniform_(self.prototypes, -1 / math.sqrt(params.output_dim), 1 / math.sqrt(params.output_dim))
        self.make_targets()

    def _dropped(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised crops ``[N, C, H, W]`` -> [CLS] ``[N, D]`` of the online ViT on a random
        ``1 - patch_drop`` of the patches (a fixed count: static shapes, no host read)."""
        vit = self.encoder.backbone
        length = (x.shape[-1] // vit.patch_size) ** 2
        n_keep = length - round(self.params.patch_drop * length)
        keep = torch.rand(x.shape[0], length, generator=self.views.gen, device=x.device).argsort(dim=1)[:, :n_keep]
        grid = x.shape[-1] // vit.patch_size  # focal crops: the position table resampled to their own grid
        tokens = vit.embed(x) + vit.pos_for(grid, grid)[:, 1:]
        return vit.encode(torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])))[:, 0]

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        p, b = self.params, images.shape[0]
        norm = self.encoder.normalise
        target_view = norm(self.views(images, view=0))
        groups = [torch.cat([self.views(images, view=1) for _ in range(p.num_anchor_views)])]
        if p.num_focal_views:
            groups.append(torch.cat([self.views(images, out_size=p.focal_crop_size, scale=tuple(p.focal_crop_scale), view=2)
                                     for _ in range(p.num_focal_views)]))
        anchors = self.projector(torch.cat([self._dropped(norm(g)) for g in groups])).view(-1, b, p.output_dim)
        with torch.no_grad():
            target = self.target_projector(self.target_encoder.backbone.tokens(target_view)[:, 0])
        ce, me_max = msn_loss(anchors, target, self.prototypes, p.temperature, p.sharpen_temperature, p.sinkhorn_iterations)
        return {"loss": ce + p.me_max_weight * me_max, "ce": ce.detach(), "me_max": me_max.detach()}

    def momentum(self, progress: float) -> float:
        # reference: linear from 0.996 to 1 over training
        return self.params.momentum + (self.params.momentum_final - self.params.momentum) * progress
