"""Rotation prediction (Gidaris et al., 2018, "Unsupervised Representation Learning by
Predicting Image Rotations", RotNet).

Every image of the batch is shown in all four rotations (0, 90, 180, 270 degrees) in the
same step -- the paper found this better than one random rotation per image -- and a small
head on the encoder's features classifies which rotation was applied (4-way cross-entropy).

Augmentation before rotating is deliberately light: the RotNet CIFAR recipe of a random
crop with 4 px zero padding plus a horizontal flip. None of it makes the rotation label
ambiguous: a horizontal flip maps upright images to upright images, and the padding band
lands on a random side, so after rotating it does not reveal the angle. What *would* break
the task is any augmentation that itself rotates the image -- a vertical flip (= a 180
degree rotation of a horizontally flipped image), 90-degree rotations, or arbitrary-angle
rotation -- so none is used; the shared ``augment:`` section (SimCLR's colour jitter,
scale-changing crops) is not applied. Rotations are exact multiples of 90 degrees
(``torch.rot90``, a pixel permutation of a square image), so no interpolation artefact
tells the angle either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline.config import Strict
from pipeline.modalities.image.views import to_float
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees: the paper's best setting


def rotate_all(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image.

    x: ``[N, C, H, W]`` with H == W. Returns ``(rotated [4N, C, H, W], labels [4N])``, grouped
    by rotation: rows ``k*N .. (k+1)*N - 1`` are ``torch.rot90(x, k, dims=(2, 3))`` (k quarter
    turns counter-clockwise) and carry label k.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {tuple(x.shape[-2:])}")
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)])
    labels = torch.arange(NUM_ROTATIONS, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


def rotation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the rotation classifier.

    logits: ``[M, 4]``; labels: ``[M]`` in {0, 1, 2, 3}. Returns the mean over the M images.
    """
    return F.cross_entropy(logits, labels)


def pad_crop_flip(x: torch.Tensor, padding: int, hflip: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image random crop of the zero-padded image (torchvision's ``RandomCrop(size,
    padding)``) and horizontal flip with probability ``hflip``, batched and exact (integer
    shifts by indexing, no resampling).

    x: float ``[N, C, H, W]`` -> ``[N, C, H, W]``.
    """
    n, _, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (padding, padding, padding, padding))  # zeros: the paper's CIFAR padding
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=gen, device=dev)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=gen, device=dev)
    rows = dy + torch.arange(h, device=dev)  # [N, H] rows of the padded image
    cols = dx + torch.arange(w, device=dev)  # [N, W]
    flip = torch.rand(n, 1, generator=gen, device=dev) < hflip
    cols = torch.where(flip, cols.flip(1), cols)
    idx = torch.arange(n, device=dev).view(n, 1, 1)
    out = xp[idx, :, rows[:, :, None], cols[:, None, :]]  # advanced indices first: [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


@METHODS.register
class Rotation(Method):
    name = "rotation"

    class Params(Strict):
        crop_padding: int = Field(4, ge=0)  # RotNet's CIFAR crop: RandomCrop(32, padding=4)
        hflip: float = Field(0.5, ge=0, le=1)  # RotNet's CIFAR RandomHorizontalFlip
        # The paper's rotation head is the rest of its network after the probed block; here a
        # 2-layer MLP on the pooled features plays that role (width is our choice).
        hidden_dim: int = Field(512, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.head = mlp(encoder.feature_dim, params.hidden_dim, NUM_ROTATIONS, layers=2)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        # ViewMaker's generator drives the randomness so extra_state() makes resume exact.
        x = to_float(images) if images.dtype == torch.uint8 else images
        x = pad_crop_flip(x, self.params.crop_padding, self.params.hflip, self.views.gen)
        rotated, labels = rotate_all(x)  # 4N images: one encoder pass, one BatchNorm batch
        logits = self.head(self.encoder(rotated))
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": rotation_loss(logits, labels), "rotation_acc": acc}
