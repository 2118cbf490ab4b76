"""The encoder every stage shares: input normalisation + backbone.

Normalisation lives inside the module (as buffers) so a saved encoder carries its own
dataset statistics: evaluations feed plain [0, 1] images and cannot get it wrong.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.models.resnet import SmallResNet


class Encoder(nn.Module):
    """float ``[N, C, H, W]`` in [0, 1] -> features ``[N, feature_dim]``."""

    def __init__(self, params: EncoderParams, channels: int, mean: list[float], std: list[float]):
        super().__init__()
        self.params = params
        self.channels = channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp(min=1e-3).view(1, -1, 1, 1))
        self.backbone = SmallResNet(channels, list(params.layers), params.width, params.stem_stride)
        self.feature_dim = self.backbone.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def build_encoder(params: EncoderParams, manifest: dict) -> Encoder:
    return Encoder(params, manifest["channels"], manifest["mean"], manifest["std"])


def save_encoder(encoder: Encoder, path: Path, provenance: dict) -> None:
    """Write atomically: a crash never leaves a truncated encoder file that looks valid."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {"params": encoder.params.model_dump(), "channels": encoder.channels, "mean": encoder.mean.flatten().tolist(),
         "std": encoder.std.flatten().tolist(), "state_dict": encoder.state_dict(), "provenance": provenance},
        tmp,
    )
    tmp.replace(path)


def load_encoder(path: str | Path) -> Encoder:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"encoder {path} not found; run the pretrain stage first (dvc repro)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise UserError(f"encoder {path} cannot be read ({err}); re-run pretraining") from None
    enc = Encoder(EncoderParams.model_validate(blob["params"]), blob["channels"], blob["mean"], blob["std"])
    enc.load_state_dict(blob["state_dict"])
    return enc.eval()
