"""The method interface every SSL method implements.

A method owns its heads, its loss and its views; the training loop, the data and the
evaluations are shared. The pretrain stage calls:

    method.prepare(sample)                 # once: fit data-dependent parts (tokenizer, queue)
    out = method.training_step(images)     # per batch: dict with 'loss' (+ scalars worth logging)
    ... backward, optimizer step ...
    method.after_optimizer_step(progress)  # per batch: EMA / momentum targets, 0 <= progress <= 1
    method.finalize(sample)                # once, after training (e.g. BatchNorm re-estimation)

and the evaluations use only ``method.encoder``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from pipeline.config import AugmentParams, Strict
from pipeline.data.augment import ViewMaker, to_float
from pipeline.errors import UserError
from pipeline.models.encoder import Encoder


BN_CHUNK = 256  # images per forward when BatchNorm statistics are re-estimated


class Method(nn.Module):
    name: ClassVar[str]
    Params: ClassVar[type[Strict]]

    def __init__(self, encoder: Encoder, params: Strict, augment: AugmentParams, seed: int, device: torch.device):
        super().__init__()
        self.encoder = encoder
        self.params = params
        self.views = ViewMaker(augment, seed, device)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loop (and DDP) call the module; labels are never passed on to the method."""
        return self.training_step(images)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: uint8 ``[N, C, H, W]`` on the training device -> ``{'loss': scalar, ...}``."""
        raise NotImplementedError

    def two_views(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float ``[2N, C, H, W]``: two random views of every image,
        stacked so both go through one forward pass (and BatchNorm sees both)."""
        return torch.cat([self.views(images, view=0), self.views(images, view=1)])  # per-view blur/solarize: augment.blur_p[v]

    def prepare(self, sample: torch.Tensor) -> None:
        """Fit anything learned from data before training (e.g. BEiT's visual tokenizer).

        sample: uint8 ``[N, C, H, W]`` pretrain images on the training device. Whatever is
        fitted must live in parameters or buffers so checkpoints carry it.
        """

    def finalize(self, sample: torch.Tensor) -> None:
        """After training, before the encoder is saved: adapt it with unlabelled
        pretrain images (``sample`` as in ``prepare``), e.g. jigsaw re-estimates BatchNorm
        statistics on whole images. Default: nothing."""

    def require_crops_fit_encoder(self, count: int, size: int, count_key: str, size_key: str) -> None:
        """Multi-crop methods: crops of another size than the images cannot go through a ViT,
        whose position table is built for one image size (the forward fails deep inside with
        a shape mismatch when the positions are added). Refuse early, naming the keys."""
        arch, image_size = self.encoder.params.arch, self.encoder.image_size
        if arch == "vit" and count and size != image_size:
            raise UserError(
                f"{size_key}: {size} px crops cannot go through a ViT encoder (encoder.arch 'vit'), which takes "
                f"{image_size} px images only: use a ResNet encoder (encoder.arch 'resnet'), or set {count_key}: 0 "
                f"(or {size_key}: {image_size})"
            )

    @torch.no_grad()
    def reestimate_batchnorm(self, sample: torch.Tensor) -> None:
        """Recompute the encoder's BatchNorm running statistics on whole images (uint8
        ``sample`` ``[N, C, H, W]``) as a cumulative average over the sample (torch's
        ``update_bn``, "precise BN"). For methods whose encoder trained on other inputs (tiles,
        small crops), so that it normalises what the evaluations feed it."""
        update_bn([to_float(chunk) for chunk in sample.split(BN_CHUNK)], self.encoder)

    def after_optimizer_step(self, progress: float) -> None:
        """Hook for momentum/EMA target updates; ``progress`` runs from 0 to 1 over training."""

    def optimized_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (EMA targets are excluded by overriding this)."""
        return [p for p in self.parameters() if p.requires_grad]

    def extra_state(self) -> dict:
        """State beyond ``state_dict`` that an exact resume needs (RNG of the views)."""
        return {"views": self.views.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.views.load_state_dict(state["views"])
