"""The encoder every stage shares: input normalisation + backbone.

Normalisation lives inside the module (as buffers) so a saved encoder carries its own
dataset statistics: evaluations feed plain [0, 1] images and cannot get it wrong.

The backbone is ``params.arch``: a small ResNet, or a small ViT (``pipeline.models.vit``),
whose token-level pieces masked image modeling reaches through ``encoder.backbone``; or one
of the field's standard backbones (``pipeline.models.standard``: torchvision's resnet18/50,
timm's ViT-S/16 and ViT-B/16), whose weights leave the pipeline (``pipeline.export``). A ViT's
grid is that of the data's image size (stored with the encoder); other sizes its patch size
divides get resampled positions (multi-crop).

This is the image encoder; a modality's encoder is built, saved and loaded through its
``Modality`` (``pipeline.modalities.encoders``; text: ``pipeline.modalities.text.encoder``).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.models.resnet import SmallResNet
from pipeline.models.standard import IN_CHANNELS, RESNETS, STANDARD, VITS, TimmViT, torchvision_resnet
from pipeline.models.vit import ViT


class Encoder(nn.Module):
    """float ``[N, C, H, W]`` in [0, 1] -> features ``[N, feature_dim]``."""

    modality = "image"

    def __init__(self, params: EncoderParams, channels: int, mean: list[float], std: list[float], image_size: int | None = None):
        super().__init__()
        self.params = params
        self.channels = channels
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp(min=1e-3).view(1, -1, 1, 1))
        # the library backbones take 3 channels: a grey channel is repeated after normalising
        self.in_channels = channels
        if params.arch in STANDARD:
            self.in_channels = IN_CHANNELS
            if channels not in (1, IN_CHANNELS):
                raise UserError(f"encoder.arch {params.arch!r} takes 1 or 3 channels, the shards hold {channels}")
        if params.arch in ("vit", *VITS):
            if image_size is None:
                raise UserError(f"encoder.arch {params.arch!r} needs the image size (data.image_size) to build its position table")
            patch = params.patch_size if params.arch == "vit" else VITS[params.arch]
            if image_size % patch:
                key = "encoder.patch_size" if params.arch == "vit" else f"encoder.arch {params.arch!r}'s patch size"
                raise UserError(
                    f"{key} ({patch}) must divide data.image_size ({image_size}): "
                    f"pick a patch size that divides {image_size} or resize the images (data.image_size)"
                )
        if params.arch == "vit":
            self.backbone = ViT(image_size, channels, params.patch_size, params.dim, params.depth, params.heads,
                                params.mlp_ratio, params.pos_embed, params.pool)
        elif params.arch in VITS:
            self.backbone = TimmViT(params.arch, image_size)
        elif params.arch in RESNETS:
            self.backbone = torchvision_resnet(params.arch)
        else:
            self.backbone = SmallResNet(channels, list(params.layers), params.width, params.stem_stride)
        self.feature_dim = self.backbone.feature_dim

    @property
    def has_patch_tokens(self) -> bool:
        """Whether ``backbone`` is a ViT with the token interface of ``pipeline.models.vit.ViT``
        (``embed``, ``encode``, ``encode_subset``, ``patch_pos``, ``grid``...): masked image modeling needs it."""
        return isinstance(self.backbone, (ViT, TimmViT))

    def check_input_size(self, size: int, key: str) -> None:
        """Refuse, naming ``key``, an input size this encoder cannot take: a ViT takes any size its
        patch size divides (positions are resampled), a ResNet any size."""
        patch = getattr(self.backbone, "patch_size", 1)
        if self.has_patch_tokens and size % patch:
            fits = sorted({max(patch, size // patch * patch), (size // patch + 1) * patch})
            raise UserError(f"{key}: {size} px does not split into the ViT's {patch} px patches "
                            f"(encoder.arch {self.params.arch!r}): use a multiple of {patch}, e.g. {' or '.join(map(str, fits))}")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images ``[N, C, H, W]`` -> the backbone's input ``[N, in_channels, H, W]``
        (dataset mean/std per channel; a grey channel repeated for a 3-channel library backbone)."""
        x = (x - self.mean) / self.std
        return x.expand(-1, self.in_channels, -1, -1) if x.shape[1] != self.in_channels else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalise(x))
