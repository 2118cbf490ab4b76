"""Image shards: how a sample is stored (``SampleFormat``: PNG or JPEG), how it decodes and
batches (``ImageCodec``, registered as the ``image`` codec), and the image shard writer.

A sample is ``{__key__, png, cls}`` (``jpg`` instead of ``png`` with ``data.image_format:
jpeg``; such a manifest says ``"image_format": "jpeg"``, a manifest without the key is png);
pretrain shards carry no ``cls`` so pretraining cannot use labels. The manifest records
counts (per split and per shard), classes, image size and format, the pretrain split's
normalisation stats and the sha256 of every shard (``pipeline/shards/write.py``, which also
runs the worker pool that calls ``SampleFormat.encode``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from pipeline.modalities.image.sources import (ArrayReader, ImageSet, SampleRefs, centre_square, load_image,
                                               load_image_short_side)
from pipeline.registry import CODECS
from pipeline.shards.manifest import MANIFEST
from pipeline.shards.write import write_shards


def _png(image: np.ndarray) -> bytes:
    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)  # PIL's PNG encoder is deterministic
    return buf.getvalue()


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)  # deterministic for a libjpeg
    return buf.getvalue()


class SampleFormat(NamedTuple):
    """How samples are stored: ``size`` x ``size`` (any aspect squashed), or with
    ``store_size`` the short side resized to it and the centre cropped square (``store_aspect``:
    not cropped, the aspect kept; readers crop the centre square); PNG or JPEG."""

    size: int
    channels: int
    store_size: int | None = None
    image_format: str = "png"  # png | jpeg
    jpeg_quality: int = 90
    store_aspect: bool = False  # with store_size: short side to store_size, aspect kept, no crop

    @property
    def side(self) -> int:
        return self.store_size or self.size

    @property
    def ext(self) -> str:  # the sample's key in the tar: png or jpg
        return "png" if self.image_format == "png" else "jpg"

    def encode(self, reader, i) -> tuple[bytes, np.ndarray]:
        """Sample ``i`` of ``reader`` loaded, resized and encoded: (its PNG/JPEG bytes, the
        pixels the readers decode: uint8 ``[side, side, C]``, the centre square)."""
        if self.store_aspect and self.store_size:
            image = load_image_short_side(reader, i, self.store_size, self.channels)
        else:
            image = load_image(reader, i, self.size, self.channels, self.store_size)
        data = _png(image) if self.image_format == "png" else _jpeg(image, self.jpeg_quality)
        return data, centre_square(image, self.side)

    def manifest_keys(self) -> dict:
        """The manifest's image keys (format and aspect only when not the defaults, so older
        manifests stay byte-identical)."""
        return {
            "image_size": self.side,
            "channels": self.channels,
            **({"image_format": self.image_format} if self.image_format != "png" else {}),
            **({"store_aspect": True} if self.store_aspect and self.store_size else {}),
        }


class ImageCodec(NamedTuple):
    """Image samples: ``png``/``jpg`` bytes -> uint8 ``[H, W, C]``; a batch is uint8 ``[B, C, H, W]``."""

    size: int | None  # None: unchecked
    channels: int
    crop: bool = False  # stored with the aspect kept (``store_aspect``): decode the centre square

    @classmethod
    def of(cls, shard_dir: str | Path, manifest: dict) -> "ImageCodec":
        """The codec of an image shard folder (``pipeline.shards.read.codec_for``)."""
        return cls(manifest.get("image_size"), manifest["channels"], manifest.get("store_aspect", False))

    def decode(self, sample: dict) -> np.ndarray:
        with Image.open(io.BytesIO(sample["png"] if "png" in sample else sample["jpg"])) as img:
            arr = np.asarray(img.convert("L" if self.channels == 1 else "RGB"))
        if self.crop and min(arr.shape[:2]) == self.size:
            arr = centre_square(arr, self.size)
        if self.size is not None and arr.shape[:2] != (self.size, self.size):
            raise ValueError(f"image is {arr.shape[1]}x{arr.shape[0]}, {MANIFEST} says {self.size}x{self.size}")
        return arr.reshape(arr.shape[0], arr.shape[1], self.channels)

    def batch(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2).contiguous()


CODECS.register(ImageCodec, "image")


def write_image_shards(splits: dict, out_dir: Path, shard_size: int, source: dict, fmt: SampleFormat | None = None,
                       workers: int = 1, n_streams: int = 1, resume: bool = False) -> dict:
    """Write every split and the manifest into ``out_dir`` (``pipeline.shards.write.write_shards``);
    returns the manifest.

    ``splits``: ``ImageSet``s (arrays, stored as they are, PNG at their own size unless
    ``fmt`` says otherwise) or ``SampleRefs`` (loaded and stored as ``fmt`` says, by
    ``workers`` processes, streaming). ``n_streams``, ``resume``: as ``write_shards``."""
    any_set = splits["pretrain"]
    if fmt is None:
        if not isinstance(any_set, ImageSet):
            raise TypeError("write_image_shards needs fmt for SampleRefs")
        fmt = SampleFormat(int(any_set.images.shape[1]), int(any_set.images.shape[3]))
    refs = {name: SampleRefs(ArrayReader(d.images), np.arange(len(d)), d.labels, d.classes, d.skipped)
            if isinstance(d, ImageSet) else d for name, d in splits.items()}
    return write_shards(refs, out_dir, shard_size, source, fmt, workers=workers, n_streams=n_streams, resume=resume)
