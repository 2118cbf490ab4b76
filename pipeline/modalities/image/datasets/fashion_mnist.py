"""Data source ``fashion-mnist``: Zalando's Fashion-MNIST IDX files (Debian's dataset-fashion-mnist
under ``data.root``, or torchvision's download with ``data.download``), 60k train and 10k test
28x28 grey images of 10 classes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.modalities.base import register_source
from pipeline.modalities.image.datasets.torchvision_datasets import torchvision_refs
from pipeline.modalities.image.sources import ImageSet, SampleRefs, materialize


class IdxReader:
    """Images of an IDX file, read one at a time: an uncompressed file is memory-mapped;
    a .gz file is decompressed into memory once per process (Fashion-MNIST: 47 MB), on
    the first ``load``, or before the shard writer's worker processes fork (they share it)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._images: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_images": None}  # each process opens the file itself

    def prepare(self) -> None:
        """Open the file now (the shard writer calls this before forking its workers)."""
        self.images()

    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = _read_idx(Path(self.path))
        return self._images

    def load(self, i: int) -> np.ndarray:
        return self.images()[i]


FASHION_MNIST_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_header(head: bytes) -> tuple[int, tuple[int, ...]]:
    """(data offset, shape) of an IDX file from its first bytes."""
    ndim = head[3]
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return 4 + 4 * ndim, shape


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file: big-endian header, then uint8 data. A .gz file is decompressed
    into memory; an uncompressed one is memory-mapped (read-only)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            data = f.read()
        offset, shape = _idx_header(data)
        return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)
    with open(path, "rb") as f:
        offset, shape = _idx_header(f.read(4 + 4 * 8))
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz", root / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    return None


def fashion_mnist_refs(root: str, download: bool) -> tuple[SampleRefs, SampleRefs]:
    """Fashion-MNIST train (60k) and test (10k) from IDX files under ``root``, by index.

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
        return torchvision_refs("FashionMNIST", root, download=True)
    sets = []
    for split in ("train", "test"):
        image_path, label_path = paths[split]
        labels = np.array(_read_idx(label_path), dtype=np.int64)
        sets.append(SampleRefs(IdxReader(image_path), np.arange(len(labels)), labels, FASHION_MNIST_CLASSES))
    return sets[0], sets[1]


def fashion_mnist(root: str, size: int, channels: int, download: bool) -> tuple[ImageSet, ImageSet]:
    """``fashion_mnist_refs`` loaded into arrays."""
    train, test = fashion_mnist_refs(root, download)
    return materialize(train, size, channels), materialize(test, size, channels)


@register_source("fashion-mnist", "image")
def load(params) -> tuple[SampleRefs, SampleRefs]:
    """``(train, test)`` references."""
    return fashion_mnist_refs(params.data.root, params.data.download)
