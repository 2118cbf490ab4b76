"""The encoder every stage shares: input normalisation + backbone.

Normalisation lives inside the module (as buffers) so a saved encoder carries its own
dataset statistics: evaluations feed plain [0, 1] images and cannot get it wrong.

The backbone is ``params.arch``: a small ResNet, or a small ViT (``pipeline.models.vit``),
whose token-level pieces masked image modeling reaches through ``encoder.backbone``. A ViT
is built for one image size, so a saved encoder stores it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.models.resnet import SmallResNet
from pipeline.models.vit import ViT
from pipeline.outputs import save_torch


class Encoder(nn.Module):
    """float ``[N, C, H, W]`` in [0, 1] -> features ``[N, feature_dim]``."""

    def __init__(self, params: EncoderParams, channels: int, mean: list[float], std: list[float], image_size: int | None = None):
        super().__init__()
        self.params = params
        self.channels = channels
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp(min=1e-3).view(1, -1, 1, 1))
        if params.arch == "vit":
            if image_size is None:
                raise UserError("encoder.arch 'vit' needs the image size (data.image_size) to build its position table")
            if image_size % params.patch_size:
                raise UserError(
                    f"encoder.patch_size ({params.patch_size}) must divide data.image_size ({image_size}): "
                    f"pick a patch size that divides {image_size} or resize the images"
                )
            self.backbone = ViT(image_size, channels, params.patch_size, params.dim, params.depth, params.heads,
                                params.mlp_ratio, params.pos_embed, params.pool)
        else:
            self.backbone = SmallResNet(channels, list(params.layers), params.width, params.stem_stride)
        self.feature_dim = self.backbone.feature_dim

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images -> the backbone's input (dataset mean/std per channel)."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalise(x))


def build_encoder(params: EncoderParams, manifest: dict) -> Encoder:
    return Encoder(params, manifest["channels"], manifest["mean"], manifest["std"], manifest.get("image_size"))


def save_encoder(encoder: Encoder, path: Path) -> None:
    """Write the encoder: its architecture, input statistics and weights, nothing volatile
    (no times, hosts or git SHAs: those go to provenance.json), so the same weights always
    give the same bytes and DVC leaves the downstream stages cached."""
    save_torch(
        {"params": encoder.params.model_dump(), "channels": encoder.channels, "mean": encoder.mean.flatten().tolist(),
         "std": encoder.std.flatten().tolist(), "image_size": encoder.image_size, "state_dict": encoder.state_dict()},
        path,
    )


def load_encoder(path: str | Path) -> Encoder:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"encoder {path} not found; run the pretrain stage first (dvc repro)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise UserError(f"encoder {path} cannot be read ({err}); re-run pretraining") from None
    # Encoders saved before the ViT arch existed have no image_size (a ResNet needs none).
    enc = Encoder(EncoderParams.model_validate(blob["params"]), blob["channels"], blob["mean"], blob["std"], blob.get("image_size"))
    enc.load_state_dict(blob["state_dict"])
    return enc.eval()
