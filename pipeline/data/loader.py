"""Training batches decoded by ``DataLoader`` worker processes, in the order one process
reads them.

Every worker reads the rank's seeded stream (``stream_batches``: tar bytes and the shuffle
buffer are cheap next to decoding) and decodes only every ``workers``-th batch: worker ``i``
batches ``i``, ``i + workers``, ... The DataLoader takes one batch from each worker in turn,
so the batches arrive in exactly the order, and with exactly the samples, of the
one-process path (``workers: 0``): the number of workers changes the speed, never the
weights. Every worker and rank yields its share of the same batch count, so no rank waits.
Text shard folders work the same way (batches of packed int64 ``[B, 2, L]``).
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import dist
from pipeline.data import shards
from pipeline.errors import UserError


class _Failure:
    """A worker's ``UserError`` as a plain message: raised in a worker, DataLoader would
    re-raise it wrapped in the worker's traceback text instead of the one-line error."""

    def __init__(self, message: str):
        self.message = message


class EpochBatches(IterableDataset):
    """One epoch of a rank's uint8 batches ``([B, C, H, W], [B])``, or text ``([B, 2, L], [B])``
    (``stream_batches``' arguments)."""

    def __init__(self, shard_dir, split: str | tuple[str, ...], batch_size: int, shuffle_buffer: int, seed: int,
                 skip_batches: int = 0):
        # The rank is this process's (a worker has no process group); the shards' sha256 are
        # checked here once, and the workers trust what this process checked.
        self.args = dict(shard_dir=shard_dir, split=split, batch_size=batch_size, shuffle_buffer=shuffle_buffer, seed=seed,
                         rank=dist.rank(), world_size=dist.world_size(), skip_batches=skip_batches)
        for name in (split,) if isinstance(split, str) else split:
            shards.shard_paths(shard_dir, name)
        shards.sample_codec(shard_dir, shards.read_manifest(shard_dir))  # a text folder's tokenizer checked here too
        self.verified = frozenset(shards._VERIFIED)

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        if info is None:
            yield from shards.stream_batches(**self.args)
            return
        shards._VERIFIED.update(self.verified)
        try:
            yield from shards.stream_batches(**self.args, batch_slice=(info.id, info.num_workers))
        except UserError as err:
            yield _Failure(str(err))


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
    """The epoch's batches (from batch ``skip_batches`` on), decoded by ``workers`` processes
    (0: in this one), in pinned memory when the batches go to a GPU (``non_blocking`` copies).
    ``split``: one split or several, as ``shards.stream_batches`` takes it."""
    dataset = EpochBatches(shard_dir, split, batch_size, shuffle_buffer, seed, skip_batches)
    if workers == 0:
        yield from dataset
        return
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                        prefetch_factor=2)
    for item in loader:
        if isinstance(item, _Failure):
            raise UserError(item.message)
        yield item
