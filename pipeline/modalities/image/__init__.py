"""The image modality: uint8 ``[N, C, H, W]`` samples, PNG/JPEG in the shards, ResNet and ViT
encoders with their normalisation inside, random-resized-crop views, the raw-pixel baseline;
its data sources and transfer sets are the modules of ``datasets/``."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.config import EncoderParams
from pipeline.errors import UserError
from pipeline.modalities.base import FeatureBaseline, Modality
from pipeline.modalities.image import codec  # noqa: F401 - registers the image shard codec (CODECS)
from pipeline.modalities.image.baseline import pixel_dim, pixel_features
from pipeline.modalities.image.views import ViewMaker, to_float
from pipeline.models.encoder import Encoder
from pipeline.models.standard import STANDARD
from pipeline.registry import MODALITIES, import_package

# The largest difference in a normalisation statistic between an encoder and the shards it is
# evaluated on: subsets of one dataset differ by < 0.005 (Fashion-MNIST's mean over 20k or 55k
# images), other datasets by far more (MNIST's mean is 0.13, Fashion-MNIST's 0.29).
STATS_TOLERANCE = 0.02


class ImageModality(Modality):
    name = "image"
    noun, nouns, content = "image", "images", "images"
    encoder_archs = ("resnet", "vit", *STANDARD)
    arch_hint = "'resnet' or 'vit'"
    baseline = FeatureBaseline("raw_pixels", "raw pixels (baseline)", "raw pixels", "raw pixels")
    random_crops = True
    payload_keys = ("params", "channels", "mean", "std", "state_dict")

    def write_shards(self, params, train, test, out: str) -> dict:
        from pipeline.modalities.image.sharding import write_shards  # the shard stage's code only

        return write_shards(params, train, test, out)

    def build_encoder(self, params: EncoderParams, manifest: dict) -> Encoder:
        return Encoder(params, manifest["channels"], manifest["mean"], manifest["std"], manifest.get("image_size"))

    def encoder_payload(self, encoder: Encoder) -> dict:
        # exactly the keys image encoders had before text existed (``causal`` is a text key)
        return {"params": encoder.params.model_dump(exclude={"causal"}), "channels": encoder.channels,
                "mean": encoder.mean.flatten().tolist(), "std": encoder.std.flatten().tolist(), "image_size": encoder.image_size,
                "state_dict": encoder.state_dict()}

    def encoder_from_payload(self, blob: dict) -> Encoder:
        # Encoders saved before the ViT arch existed have no image_size (a ResNet needs none).
        return Encoder(EncoderParams.model_validate(blob["params"]), blob["channels"], blob["mean"], blob["std"],
                       blob.get("image_size"))

    def check_fits(self, blob: dict, manifest: dict, path: Path, shards, fix: str) -> None:
        if blob["channels"] != manifest["channels"]:
            raise UserError(f"encoder {path} takes {blob['channels']}-channel images but {shards} holds "
                            f"{manifest['channels']}-channel images; {fix}")
        size = blob.get("image_size")
        if size is not None and size != manifest.get("image_size"):
            raise UserError(f"encoder {path} was trained on {size}x{size} images but {shards} holds "
                            f"{manifest.get('image_size')}x{manifest.get('image_size')}; {fix}")
        for key in ("mean", "std"):
            ours, theirs = blob[key], manifest.get(key) or []
            if len(ours) != len(theirs) or any(not abs(a - b) <= STATS_TOLERANCE for a, b in zip(ours, theirs)):
                raise UserError(f"encoder {path} normalises with {key} {[round(v, 4) for v in ours]} but the images of "
                                f"{shards} have {key} {theirs} (another dataset); {fix}")

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float in [0, 1]; float views (diagnostics) as they are."""
        return to_float(x) if x.dtype == torch.uint8 else x

    def describe_data(self, source: str, manifest: dict) -> str:
        return f"`{source}` at {manifest['image_size']}x{manifest['image_size']}x{manifest['channels']}"

    def baseline_featurizer(self, shards: str, params):
        return pixel_features

    def baseline_dim(self, manifest: dict, params) -> int:
        return pixel_dim(manifest["channels"], manifest["image_size"])

    def views(self, params, augment, seed: int, device: torch.device) -> ViewMaker:
        """Augmented views by ``augment`` (an ``AugmentParams``: the diagnostics' section)."""
        return ViewMaker(augment, seed, device)


MODALITIES.register(ImageModality())
import_package(f"{__name__}.datasets")  # its data sources and transfer sets register themselves
