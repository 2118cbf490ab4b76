"""The image sample types and the loading every image source shares; each data source is one
module of ``datasets/`` (its reader, its ``*_refs`` and its registration).

A source gives its samples in two forms:

- ``SampleRefs`` (the shard stage): the samples by reference (an index into a picklable
  ``reader``: ``ArrayReader`` rows, ``FolderReader`` files, or a source's own reader) with
  their labels and no pixels, so splits are computed from labels alone and images are
  loaded one at a time (``load_image``) by the shard writer's worker processes.
- ``ImageSet``: uint8 arrays ``[N, H, W, C]`` already resized to the pipeline's resolution
  and channel count (small sets: tests, transfer evaluations), built from the same
  references (``materialize``), so both forms give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from pipeline.errors import UserError

PIL_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's decompression-bomb limit: data.max_image_pixels' default


@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    # Files of the source skipped as non-images (paths relative to the source root); kept
    # on every subset so the shard manifest can record them.
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "ImageSet":
        """The samples at ``idx`` (classes and skipped files kept)."""
        return replace(self, images=self.images[idx], labels=self.labels[idx])


@dataclass(frozen=True)
class SampleRefs:
    """Samples by reference: ``reader.load(index[i])`` opens sample ``i`` (a PIL image or
    a uint8 array ``[H, W(, C)]``); ``labels`` are known without opening any image."""

    reader: object  # picklable, with load(i: int) -> PIL.Image.Image | np.ndarray
    index: np.ndarray  # int64 [N], positions in reader
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "SampleRefs":
        return replace(self, index=self.index[idx], labels=self.labels[idx])


class ArrayReader:
    """Samples that are rows of a uint8 array ``[N, H, W(, C)]`` (in memory or memory-mapped)."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def load(self, i: int) -> np.ndarray:
        return self.images[i]


class FolderReader:
    """Image files by path. An image over ``max_pixels`` (``data.max_image_pixels``; None: no
    limit) is refused from its header, before its pixels are decoded (a decompression bomb)."""

    def __init__(self, paths: tuple[str, ...], max_pixels: int | None = PIL_MAX_PIXELS) -> None:
        self.paths = paths
        self.max_pixels = max_pixels

    def load(self, i: int) -> Image.Image:
        path = self.paths[i]
        try:
            img = _open_within(path, self.max_pixels)
            img.load()
        except OSError as err:
            raise UserError(f"cannot read image {path}: {err}; remove or replace the file") from None
        return img


def _open_within(path: str, max_pixels: int | None) -> Image.Image:
    """``Image.open(path)`` (the header only), refused when it holds more than ``max_pixels``.
    PIL's own guard (a warning above its limit, an error above twice it) is replaced by this
    one, so the limit is the param's and the message names the file and the param."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        img.close()
        raise UserError(f"image {path} has {w}x{h} = {w * h:,} pixels, over data.max_image_pixels ({max_pixels:,}; a guard "
                        "against decompression bombs): remove the file, or raise data.max_image_pixels if you trust it")
    return img


def limit_pixels(sets, max_pixels: int | None) -> None:
    """Apply ``data.max_image_pixels`` to the file readers of ``sets`` (``SampleRefs``)."""
    for refs in sets:
        if isinstance(refs.reader, FolderReader):
            refs.reader.max_pixels = max_pixels


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit greyscale (PNG's "I;16" modes, or "I" holding 16-bit values) -> 8-bit "L", scaled
    (``round(v * 255 / 65535)``): PIL's ``convert("L")`` clips every value above 255 to white."""
    if img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return img
    values = np.asarray(img).astype(np.int64).clip(0, 65535)
    return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L")


def load_image(reader, i: int, size: int, channels: int, store_size: int | None = None) -> np.ndarray:
    """Sample ``i`` of ``reader`` as uint8 ``[S, S, channels]``: resized to ``size`` (any
    aspect ratio is squashed, as the array sources always did), or with ``store_size`` the
    short side resized to ``store_size`` and the centre cropped to ``store_size`` square."""
    img = reader.load(int(i))
    if isinstance(img, np.ndarray):
        arr = img[..., None] if img.ndim == 2 else img
        if store_size is None and arr.shape == (size, size, channels):
            return np.ascontiguousarray(arr)  # already in format: no PIL round trip (as to_format)
        img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    try:
        out = _pil_format(img, size, channels) if store_size is None else _pil_store(img, store_size, channels)
    except OSError as err:  # truncated files fail when the pixels are decoded
        raise UserError(f"cannot read image {getattr(img, 'filename', '') or i}: {err}; remove or replace the file") from None
    finally:
        if hasattr(img, "close") and getattr(img, "filename", ""):
            img.close()
    side = store_size or size
    return np.asarray(out).reshape(side, side, channels)


def _pil_store(img: Image.Image, side: int, channels: int) -> Image.Image:
    """Short side resized to ``side`` (bicubic), then the centre ``side`` x ``side`` crop:
    torchvision's ``Resize(side)`` then ``CenterCrop(side)`` on a PIL image, to the pixel."""
    img = _to_8bit(img)
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    img = img.convert("L" if channels == 1 else "RGB")
    w, h = img.size
    if w <= h:
        nw, nh = side, int(side * h / w)
    else:
        nw, nh = int(side * w / h), side
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = int(round((nw - side) / 2.0)), int(round((nh - side) / 2.0))
    return img.crop((left, top, left + side, top + side))


def load_image_short_side(reader, i: int, side: int, channels: int) -> np.ndarray:
    """Sample ``i`` of ``reader`` as uint8 ``[H, W, channels]`` with its short side resized to
    ``side`` (bicubic) and its aspect ratio kept, no crop (``data.store_aspect``): a reader
    crops what it needs, e.g. a random crop over the whole photo."""
    img = reader.load(int(i))
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img)
    try:
        img = _to_8bit(img)  # as _pil_store
        img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
        img = img.convert("L" if channels == 1 else "RGB")
        w, h = img.size
        nw, nh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)  # as _pil_store
        out = img.resize((nw, nh), Image.BICUBIC) if (nw, nh) != (w, h) else img
        arr = np.asarray(out)
    except OSError as err:  # truncated files fail when the pixels are decoded
        raise UserError(f"cannot read image {getattr(img, 'filename', '') or i}: {err}; remove or replace the file") from None
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def centre_square(image: np.ndarray, side: int) -> np.ndarray:
    """The centre ``side`` x ``side`` of uint8 ``[H, W, C]`` (H, W >= side), as ``_pil_store`` crops."""
    top, left = int(round((image.shape[0] - side) / 2.0)), int(round((image.shape[1] - side) / 2.0))
    return image[top : top + side, left : left + side]


def materialize(refs: SampleRefs, size: int, channels: int) -> ImageSet:
    """Every sample of ``refs`` loaded into one array (small sets only)."""
    n = len(refs)
    images = np.empty((n, size, size, channels), np.uint8)
    for k, i in enumerate(refs.index):
        images[k] = load_image(refs.reader, i, size, channels)
    return ImageSet(images, refs.labels, refs.classes, refs.skipped)


def to_format(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize and convert uint8 images ``[N, H, W(, C)]`` to ``[N, size, size, channels]``."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] == (size, size) and images.shape[3] == channels:
        return np.ascontiguousarray(images)
    return np.stack([np.asarray(_pil_format(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im), size, channels)) for im in images]).reshape(len(images), size, size, channels)


def _pil_format(img: Image.Image, size: int, channels: int) -> Image.Image:
    # P (palette) and RGBA images convert through RGB so transparency and palettes become plain colour.
    img = _to_8bit(img)
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return img
