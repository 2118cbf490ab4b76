"""MoCo v3 (Chen, Xie & He, 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

No queue: the keys are the other view's momentum-encoder outputs in the (global) batch. A
query encoder (encoder + 3-layer projector + 2-layer predictor) is trained by a symmetric
InfoNCE; the momentum encoder (encoder + projector) follows it by EMA with a cosine
schedule of m toward 1. The ViT recipe's trick against instability, a frozen random patch
projection (the paper's Sec. 4.2), is the option ``freeze_patch_embed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.methods._ema import MomentumMethod, cosine_tau
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """The paper's ``ctr(q, k)`` (Algorithm 1), scaled by ``2 * temperature`` as its code does.

    q: ``[N, D]`` this rank's queries; k: ``[N, D]`` their positive keys (no gradient). The
    keys of every rank are the negatives: logits ``[N, N * world] = q k_all^T / temperature``
    (both L2-normalised), the positive of query i at column ``rank * N + i``. Returns
    ``2 * temperature * mean_i CE``.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(dist.gather_with_grad(k.detach()), dim=1)  # [N * world, D]
    logits = q @ k.T / temperature
    labels = dist.rank() * q.shape[0] + torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(logits, labels) * (2 * temperature)


@METHODS.register
class MoCoV3(MomentumMethod):
    name = "mocov3"
    ema_targets = {"momentum_encoder": "encoder", "momentum_projector": "projector"}

    class Params(Strict):
        # paper: 0.2 for ViT (Table 8 / official vit recipe); 1.0 for ResNet-50 on ImageNet.
        # solo-learn's ResNet-18 CIFAR recipe uses 0.2 as well
        temperature: float = Field(0.2, gt=0)
        # paper: m = 0.99 rising to 1 on a cosine schedule
        base_momentum: float = Field(0.99, ge=0, le=1)
        final_momentum: float = Field(1.0, ge=0, le=1)
        # paper: projector 3 layers, predictor 2 layers, hidden 4096, output 256, BN on every
        # layer (the projector's output BN without affine); hidden 2x the small ResNet's 256
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(256, ge=1)
        predictor_hidden_dim: int = Field(512, ge=1)
        # paper Sec. 4.2: a frozen random patch projection stabilises ViT training (ViT only)
        freeze_patch_embed: bool = False

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        if params.freeze_patch_embed:
            if not encoder.has_patch_tokens:  # ours or timm's ViT
                raise UserError(f"mocov3.freeze_patch_embed: the frozen random patch projection needs a ViT encoder, got "
                                f"encoder.arch {encoder.params.arch!r}: set `encoder: {{arch: vit}}` under `mocov3:` in "
                                "params.yaml, or mocov3.freeze_patch_embed: false")
            encoder.backbone.patch_embed.requires_grad_(False)  # stays at its random init
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=3, last_bn=True)
        self.predictor = mlp(params.projection_dim, params.predictor_hidden_dim, params.projection_dim, layers=2)
        self.make_targets()

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        views = self.two_views(images)
        q1, q2 = self.predictor(self.projector(self.encoder(views))).chunk(2)
        with torch.no_grad():
            k1, k2 = self.momentum_projector(self.momentum_encoder(views)).chunk(2)
        t = self.params.temperature
        return {"loss": contrastive_loss(q1, k2, t) + contrastive_loss(q2, k1, t)}

    def momentum(self, progress: float) -> float:
        return cosine_tau(self.params.base_momentum, self.params.final_momentum, progress)
