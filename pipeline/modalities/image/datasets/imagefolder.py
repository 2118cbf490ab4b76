"""Data source ``imagefolder``: the user's own images, ``data.root/<class>/*.jpg`` (a seeded,
stratified ``data.test_fraction`` held out as test) or ``data.root/{train,val}/<class>/``;
and ``image_tree_refs``, the unlabelled image tree of ``data.pretrain_root``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import UserError
from pipeline.modalities.base import register_source
from pipeline.modalities.image.sources import FolderReader, ImageSet, SampleRefs, limit_pixels, materialize
from pipeline.shards.splits import split_stratified


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


@register_source("imagefolder", "image")
def load(params) -> tuple[SampleRefs, SampleRefs]:
    """``(train, test)`` references; a file over ``data.max_image_pixels`` is refused from its header."""
    d = params.data
    train, test = image_folder_refs(d.root, d.test_fraction, params.seed)
    limit_pixels((train, test), d.max_image_pixels)
    return train, test
