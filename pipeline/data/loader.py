"""Training batches decoded by ``DataLoader`` worker processes, in the order one process
reads them.

A shard folder of virtual streams (``data.streams`` > 1, ``pipeline/shards/streams.py``): each
worker opens only its streams of the rank's streams, so it parses about
1 / (ranks x workers) of the data. A folder of one stream (the default): every worker reads
the rank's seeded stream and decodes only every ``workers``-th batch. Either way a worker
yields each batch with its number in the rank's epoch and this process puts them back in
that order, so the batches arrive in exactly the order, and with exactly the samples, of the
one-process path (``workers: 0``): the number of workers changes the speed, never the
weights. Every worker and rank yields its share of the same batch count, so no rank waits.
Workers are persistent (``EpochLoader``: started once, told each epoch's seed through shared
memory). Text shard folders work the same way (batches of packed int64 ``[B, 2, L]``).
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import dist
from pipeline.errors import UserError
from pipeline.shards.manifest import read_manifest
from pipeline.shards.read import codec_for, stream_batches
from pipeline.shards.verify import shard_paths


class _Failure:
    """A worker's ``UserError`` as a plain message: raised in a worker, DataLoader would
    re-raise it wrapped in the worker's traceback text instead of the one-line error."""

    def __init__(self, message: str):
        self.message = message


class EpochBatches(IterableDataset):
    """A rank's uint8 batches ``([B, C, H, W], [B])``, or text ``([B, 2, L], [B])``, of the epoch
    ``set_epoch`` names (``stream_batches``' arguments). The epoch's seed and resume position
    live in shared memory, so persistent workers read the new ones at each epoch."""

    def __init__(self, shard_dir, split: str | tuple[str, ...], batch_size: int, shuffle_buffer: int):
        # The rank is this process's (a worker has no process group). Nothing is hashed here:
        # the readers verify each shard as they stream it.
        self.args = dict(shard_dir=shard_dir, split=split, batch_size=batch_size, shuffle_buffer=shuffle_buffer,
                         rank=dist.rank(), world_size=dist.world_size())
        for name in (split,) if isinstance(split, str) else split:
            shard_paths(shard_dir, name, verify=False)
        codec_for(shard_dir, read_manifest(shard_dir))  # a text folder's tokenizer checked here too
        # seed, skip_batches; no lock (a semaphore needs /dev/shm): written only between epochs
        self.epoch = mp.RawArray("q", 2)

    def set_epoch(self, seed: int, skip_batches: int = 0) -> None:
        self.epoch[0], self.epoch[1] = seed, skip_batches

    def __iter__(self) -> Iterator:
        seed, skip = self.epoch[:]
        info = get_worker_info()
        if info is None:
            yield from stream_batches(**self.args, seed=seed, skip_batches=skip)
            return
        try:
            yield from stream_batches(**self.args, seed=seed, skip_batches=skip,
                                      batch_slice=(info.id, info.num_workers), indexed=True)
        except UserError as err:
            yield _Failure(str(err))


class EpochLoader:
    """Epochs of a rank's batches decoded by ``workers`` persistent processes (0: in this one),
    in pinned memory when the batches go to a GPU (``non_blocking`` copies). ``split``: one
    split or several, as ``stream_batches`` takes it."""

    def __init__(self, shard_dir, split: str | tuple[str, ...], batch_size: int, shuffle_buffer: int, workers: int,
                 device: torch.device):
        self.dataset = EpochBatches(shard_dir, split, batch_size, shuffle_buffer)
        self.loader = None if workers == 0 else DataLoader(
            self.dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda", prefetch_factor=2,
            persistent_workers=True)

    def epoch(self, seed: int, skip_batches: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch of ``seed`` (base seed + epoch), from batch ``skip_batches`` on."""
        self.dataset.set_epoch(seed, skip_batches)
        if self.loader is None:
            yield from self.dataset
            return
        pending, want = {}, skip_batches  # workers' batches that came early, by number
        for item in self.loader:
            if isinstance(item, _Failure):
                raise UserError(item.message)
            pending[item[0]] = item[1]
            while want in pending:
                yield pending.pop(want)
                want += 1
        if pending:  # a gap means a worker stopped early: never silently skip batches
            raise RuntimeError(f"loader workers gave batches {sorted(pending)} but not batch {want}")


def loader_workers(requested: int | None, device: torch.device) -> int:
    """``pretrain.loader_workers`` resolved: ``requested``, or by default none when training on
    the CPU, where the training step already uses every core and workers only take cores from
    it (``benchmarks/input_path.py``, 2 cores: 521 img/s with 0 workers, 455 with 2), and the
    cores available otherwise (``dist.default_workers``)."""
    if requested is not None:
        return requested
    return 0 if device.type == "cpu" else dist.default_workers(None)


def epoch_batches(shard_dir, split: str | tuple[str, ...], batch_size: int, shuffle_buffer: int, seed: int, workers: int,
                  device: torch.device, skip_batches: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's batches (from batch ``skip_batches`` on) of a one-epoch ``EpochLoader``."""
    yield from EpochLoader(shard_dir, split, batch_size, shuffle_buffer, workers, device).epoch(seed, skip_batches)
