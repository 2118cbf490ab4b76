"""WebDataset tar shards: writing (byte-identical for the same input) and reading.

A sample is ``{__key__, png, cls}``; pretrain shards carry no ``cls`` so pretraining cannot
use labels. ``manifest.json`` records counts, classes, image format, normalisation stats
and the sha256 of every shard, which readers verify before trusting a shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from pipeline.data.sources import ImageSet
from pipeline.errors import UserError

MANIFEST = "manifest.json"


def _png(image: np.ndarray) -> bytes:
    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)  # PIL's PNG encoder is deterministic
    return buf.getvalue()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_split(data: ImageSet, out_dir: Path, split: str, shard_size: int, with_labels: bool) -> list[str]:
    """Write ``{split}-NNNNNN.tar`` shards in dataset order; returns their file names."""
    names = []
    for start in range(0, len(data), shard_size):
        name = f"{split}-{start // shard_size:06d}.tar"
        # mtime=0 and fixed user/group make the tar bytes depend only on the samples.
        with wds.TarWriter(str(out_dir / name), mtime=0, user="ssl", group="ssl") as sink:
            for i in range(start, min(start + shard_size, len(data))):
                sample = {"__key__": f"{split}_{i:08d}", "png": _png(data.images[i])}
                if with_labels:
                    sample["cls"] = str(int(data.labels[i])).encode()
                sink.write(sample)
        names.append(name)
    return names


def write_shards(splits: dict[str, ImageSet], out_dir: Path, shard_size: int, source: dict) -> dict:
    """Write every split and the manifest into ``out_dir`` (replaced atomically-ish:
    the manifest is written last, so a crash leaves no manifest and readers refuse the dir)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*"):
        old.unlink()
    any_set = splits["pretrain"]
    pre = any_set.images.astype(np.float64) / 255.0
    manifest = {
        "source": source,
        "image_size": int(any_set.images.shape[1]),
        "channels": int(any_set.images.shape[3]),
        "classes": list(any_set.classes),
        # per-channel stats of the pretrain split, used by the encoder's input normalisation
        "mean": [round(float(m), 6) for m in pre.mean(axis=(0, 1, 2))],
        "std": [round(float(s), 6) for s in pre.std(axis=(0, 1, 2))],
        "splits": {},
    }
    for split, data in splits.items():
        names = write_split(data, out_dir, split, shard_size, with_labels=split != "pretrain")
        counts = np.bincount(data.labels, minlength=len(data.classes))
        manifest["splits"][split] = {
            "count": len(data),
            "per_class": {c: int(n) for c, n in zip(data.classes, counts)} if split != "pretrain" else None,
            "shards": {n: sha256(out_dir / n) for n in names},
        }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


def read_manifest(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: the shards are missing or incomplete; run 'dvc repro shard'")
    return json.loads(path.read_text())


def shard_paths(shard_dir: str | Path, split: str, verify: bool = True) -> list[str]:
    """Paths of a split's shards, checked against the manifest's sha256."""
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise UserError(f"split {split!r} not in {shard_dir}/{MANIFEST}; valid: {list(manifest['splits'])}")
    paths = []
    for name, digest in manifest["splits"][split]["shards"].items():
        path = Path(shard_dir) / name
        if not path.is_file():
            raise UserError(f"shard {path} is missing; run 'dvc checkout' or 'dvc repro shard'")
        if verify and sha256(path) != digest:
            raise UserError(f"shard {path} is corrupt (sha256 differs from {MANIFEST}); re-create it with 'dvc repro -f shard'")
        paths.append(str(path))
    return paths


def _decode(sample: dict, channels: int) -> tuple[np.ndarray, int]:
    with Image.open(io.BytesIO(sample["png"])) as img:
        arr = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    label = int(sample["cls"]) if "cls" in sample else -1
    return arr.reshape(arr.shape[0], arr.shape[1], channels), label


def _to_batch(images: list[np.ndarray], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # uint8 [B, C, H, W]
    return x, torch.tensor(labels, dtype=torch.long)


def _reraise_corrupt(exn: Exception) -> bool:
    raise UserError(f"cannot read shard data ({exn}); re-create the shards with 'dvc repro -f shard'") from exn


def load_split(shard_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in shard order: uint8 images ``[N, C, H, W]`` and labels ``[N]`` (-1 if none)."""
    channels = read_manifest(shard_dir)["channels"]
    ds = wds.WebDataset(shard_paths(shard_dir, split), shardshuffle=False, handler=_reraise_corrupt, empty_check=False)
    images, labels = [], []
    for sample in ds:
        img, label = _decode(sample, channels)
        images.append(img)
        labels.append(label)
    if not images:
        raise UserError(f"split {split!r} in {shard_dir} is empty")
    return _to_batch(images, labels)


def stream_batches(
    shard_dir: str | Path, split: str, batch_size: int, shuffle_buffer: int, seed: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled uint8 batches ``([B, C, H, W], [B])`` streamed from the shards.

    Shards are split across DDP ranks (``split_by_node``); shard order and the sample
    shuffle buffer are seeded, so an epoch's order depends only on ``seed`` (pass
    ``base_seed + epoch``) and a resumed run sees the same batches. The last incomplete
    batch is dropped (contrastive losses want equal batch sizes).
    """
    channels = read_manifest(shard_dir)["channels"]
    paths = shard_paths(shard_dir, split, verify=False)
    ds = (
        wds.WebDataset(paths, shardshuffle=len(paths) if len(paths) > 1 else False, seed=seed,
                       nodesplitter=wds.split_by_node, handler=_reraise_corrupt, empty_check=False)
        .shuffle(shuffle_buffer, initial=shuffle_buffer, seed=seed)
        .map(lambda sample: _decode(sample, channels))
    )
    images, labels = [], []
    for img, label in ds:
        images.append(img)
        labels.append(label)
        if len(images) == batch_size:
            yield _to_batch(images, labels)
            images, labels = [], []
