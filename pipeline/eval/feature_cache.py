"""Frozen features extracted once per encoder and split, kept as memory-mapped arrays.

Every frozen-feature protocol (linear probe, kNN, few-shot, label efficiency) of one encoder
reads the same features; each is its own DVC stage and process, so without a cache each
stage would run the encoder over the split again. The cache is a folder of ``.npy`` files
(``<key>.features.npy`` ``[N, D]`` and ``<key>.labels.npy`` ``[N]``) named by a hash of
everything the features depend on: the encoder's weights and class (or the featurizer's
name), the split's shard digests from the manifest, the stored dtype and ``FORMAT``.

Stored dtype: float16 when the features were computed on CUDA (in bfloat16 autocast: fp16
keeps more mantissa bits than the bf16 they were computed in), float32 on the CPU, where
they are computed in fp32, so the CPU default's numbers do not change. Readers get a
read-only ``np.memmap``: a split's features are paged in as a protocol touches them, never
copied whole into the process (1.28M x 2048 fp16 is 5.2 GB).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

FORMAT = 1  # bump when the way features are computed changes: old entries are then never read


def feature_dtype(device: torch.device) -> np.dtype:
    """What a split's features are stored as: float16 from CUDA (bf16 autocast), float32 from the CPU."""
    return np.dtype(np.float16 if device.type == "cuda" else np.float32)


def encoder_id(encoder: nn.Module) -> str:
    """sha256 of the encoder's class, its architecture params and every parameter and buffer
    (names, dtypes, shapes, bytes). The params matter beside the weights: a causal and a
    bidirectional Transformer of one seed have the same weights and different features."""
    h = hashlib.sha256(f"{type(encoder).__module__}.{type(encoder).__qualname__}".encode())
    params = getattr(encoder, "params", None)
    if params is not None:
        h.update(json.dumps(params.model_dump(), sort_keys=True).encode())
    for name, t in encoder.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)  # 0-d buffers (num_batches_tracked) as 1-d
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(featurizer: str, manifest: dict, split: str, dtype: np.dtype) -> str:
    """The entry's file stem: a hash of the featurizer's id, the split's shards, the dtype and FORMAT."""
    shards = manifest["splits"][split].get("shards", {})
    text = json.dumps({"featurizer": featurizer, "split": split, "shards": shards, "dtype": np.dtype(dtype).str,
                       "format": FORMAT}, sort_keys=True)
    return f"{split}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def cached_features(cache_dir: str | Path, key: str, batches: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                    featurize: Callable[[torch.Tensor], np.ndarray], count: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(features [N, D] read-only memmap of dtype, labels int64 [N])`` of entry ``key``:
    read if present, else computed batch by batch from ``batches()`` (each ``(x, labels)``)
    straight into a memmap, and renamed into place only when complete (a killed extraction
    leaves no entry that could be read)."""
    cache_dir = Path(cache_dir)
    feats_path, labels_path = cache_dir / f"{key}.features.npy", cache_dir / f"{key}.labels.npy"
    if feats_path.is_file() and labels_path.is_file():
        return np.load(feats_path, mmap_mode="r"), np.load(labels_path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{key}.{os.getpid()}.tmp.npy"  # per process: two stages may extract at once
    tmp_labels = cache_dir / f"{key}.{os.getpid()}.labels.tmp.npy"
    out, labels, filled = None, np.empty(count, np.int64), 0
    try:
        for x, y in batches():
            f = featurize(x)
            if out is None:  # the feature dimension is known after the first batch
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count, f.shape[1]))
            out[filled:filled + len(f)] = f
            labels[filled:filled + len(f)] = y.numpy()
            filled += len(f)
        if filled != count:
            raise RuntimeError(f"split of {count} samples (manifest) streamed {filled}: the shards changed under the cache")
        if out is None:
            raise RuntimeError("an empty split has no features")
        out.flush()
        del out
        np.save(tmp_labels, labels)
        os.replace(tmp_labels, labels_path)
        os.replace(tmp, feats_path)  # last: an entry is complete once its features file exists
    finally:
        tmp.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)
    return np.load(feats_path, mmap_mode="r"), labels
