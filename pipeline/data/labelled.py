"""Labelled samples a classifier trains on (fine-tuning, the SGD probe, label efficiency's
fine-tune arm), whatever holds them:

- ``streamed``: the shards, read epoch by epoch (a seeded shard order and shuffle buffer, as
  pretraining reads them), so no split's images are ever held in memory, whatever its size;
- ``in_memory``: tensors (text, whose short entries train in batches of similar lengths
  over the whole epoch; tests).

A ``LabelledSet`` does not fix the batch size: the trainer picks it (capped at the sample
count), then asks for ``batches(epoch)``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from pipeline import dist
from pipeline.modalities.text.length_groups import length_grouped
from pipeline.data.loader import EpochLoader
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import epoch_steps
from pipeline.shards.write import write_subset

Batches = Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # epoch -> (x, labels int64 [B]) on the CPU


@dataclass(frozen=True)
class LabelledSet:
    """``count`` samples; ``batches_for(batch_size, seed)`` -> ``batches(epoch)``, full batches
    of ``batch_size`` per process, a fresh seeded order each epoch; under DDP each rank gets
    ``steps(batch_size)`` batches of its own samples."""

    count: int
    batches_for: Callable[[int, int], Batches]
    scratch: tempfile.TemporaryDirectory | None = None  # a subset's copy (``streamed``), removed with the set
    shards: tuple[str, tuple[str, ...]] | None = None  # (folder, splits) when ``streamed``

    def steps(self, batch_size: int) -> int:
        """Optimizer steps of an epoch: the batches each rank gets. From shards, the shards' own count
        (``epoch_steps``: with ``data.streams`` > 1 each rank reads whole streams, fewer than
        ``count // (batch_size x world)`` batches when the streams' counts do not divide by the batch)."""
        if self.shards is None:
            return steps_per_epoch(self.count, batch_size)
        return epoch_steps(self.shards[0], self.shards[1], batch_size, dist.world_size())


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of an epoch of ``n`` samples at ``batch_size`` per process."""
    return n // (batch_size * dist.world_size())


def streamed(shard_dir, splits: tuple[str, ...], shuffle_buffer: int, workers: int, device: torch.device,
             keep: dict[str, np.ndarray] | None = None) -> LabelledSet:
    """The labelled samples of ``splits``, read from the shards every epoch and decoded by
    ``workers`` persistent loader processes (``EpochLoader``). With ``keep`` (``{split: indices}``, e.g. a
    label-efficiency fraction) only those: copied once, still encoded, to a scratch shard
    folder (``shards.write_subset``, under the temporary directory, removed with the set), so
    each epoch reads the subset alone, not the whole split around it."""
    scratch = None
    if keep is not None:
        scratch = tempfile.TemporaryDirectory(prefix="labelled-subset-")
        write_subset(shard_dir, splits, keep, Path(scratch.name))
        shard_dir, splits = scratch.name, ("subset",)
    count = sum(read_manifest(shard_dir)["splits"][s]["count"] for s in splits)

    def batches_for(batch_size: int, seed: int) -> Batches:
        loader = EpochLoader(shard_dir, splits, batch_size, shuffle_buffer, workers, device)  # workers kept across epochs
        return lambda epoch: loader.epoch(seed * 100_003 + epoch)

    return LabelledSet(count, batches_for, scratch, (str(shard_dir), tuple(splits)))


def in_memory(x: torch.Tensor, labels: torch.Tensor, window_batches: int = 1, lengths: torch.Tensor | None = None) -> LabelledSet:
    """Samples held as tensors: uint8 images ``[N, C, H, W]`` or packed int64 text ``[N, 2, L]``,
    labels ``[N]``; with ``lengths`` ``[N]`` (``Modality.sample_lengths``: text), batches of similar
    lengths, sorted in windows of ``window_batches`` batches (``in_memory_batches``)."""
    return LabelledSet(len(x), lambda batch_size, seed: in_memory_batches(x, labels, batch_size, seed, lengths, window_batches))


def in_memory_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int,
    lengths: torch.Tensor | None = None, window_batches: int = 1,
) -> Batches:
    """``batches(epoch)`` for a ``TrainJob`` over in-memory tensors: each epoch a fresh
    permutation drawn from a generator seeded with ``(seed, epoch)``, full batches only.
    images: ``[N, C, H, W]`` (uint8) or packed text ``[N, 2, L]``, labels: ``[N]`` (int64).

    ``lengths`` ``[N]`` (text: real tokens per entry): batches of similar lengths
    (``length_grouped``): the permutation's windows of ``window_batches`` global batches
    sorted by length, the epoch's batches then in a seeded random order.

    Under DDP ``batch_size`` is per process: every rank draws the same permutation and
    takes its slice of each global batch of ``batch_size x world`` images, so the ranks
    together see the one-process run's global batches and all take
    ``N // (batch_size x world)`` steps (``steps_per_epoch``)."""
    labels = labels.long()
    rank, world = dist.rank(), dist.world_size()
    step = batch_size * world

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(len(images), generator=gen)
        full = perm[: len(perm) // step * step]
        if lengths is None:
            full = full.view(-1, step)  # [steps, global batch]
        else:
            full = full[length_grouped(lengths[full], step, window_batches, gen)]
        for idx in full:
            idx = idx[rank * batch_size : (rank + 1) * batch_size]
            yield images[idx], labels[idx]

    return batches
