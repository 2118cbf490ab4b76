"""Virtual streams: who reads which shard (``data.streams``), so each (rank, loader worker)
parses only its share of the data.

A shard folder written with ``data.streams: S > 1`` has a multiple of ``S`` shards per split,
sized so that shard ``i`` belongs to stream ``i % S`` and every stream holds the same number
of samples (to one; ``shard_sizes``). Each epoch, each stream reads its own shards in a
seeded order through its own shuffle buffer and cuts its own batches. A rank owns the
streams ``s % world_size == rank``; among the rank's loader workers, worker ``w`` of ``n``
reads the rank's streams ``w, w + n, ...``. The rank's batches come in a fixed round-robin
over its streams (``batch_order``), so the batches, and their order, depend on the seed,
the batch size and the world size, never on the number of loader workers.
"""

from __future__ import annotations

import math

from pipeline.errors import UserError


def shard_sizes(n: int, shard_size: int, streams: int) -> list[int]:
    """Sample counts of a split's shards, in file order. One stream: ``shard_size`` each, the
    last smaller (as ever). ``streams`` S > 1: ``k * S`` shards of at most ``shard_size``,
    where shard ``i`` is stream ``i % S``'s and every stream gets ``n // S`` or one more."""
    if streams == 1:
        return [min(shard_size, n - start) for start in range(0, n, shard_size)]
    k = max(1, math.ceil(n / (streams * shard_size)))  # shards per stream
    sizes = []
    for i in range(k * streams):
        s, j = i % streams, i // streams
        per_stream = n // streams + (s < n % streams)
        sizes.append(per_stream // k + (j < per_stream % k))
    return sizes


def stream_of(shard_index: int, streams: int) -> int:
    """The stream a split's ``shard_index``-th shard (file order) belongs to."""
    return shard_index % streams


def rank_streams(streams: int, rank: int, world_size: int) -> list[int]:
    """The streams a rank reads; refuses a world size that does not divide ``streams``
    (ranks with unequal stream counts would get unequal data)."""
    if streams % world_size:
        raise UserError(
            f"the shards have data.streams={streams} virtual streams, not a multiple of the {world_size} "
            f"processes; re-shard with data.streams a multiple of {world_size} (e.g. {world_size * math.ceil(64 / world_size)})"
        )
    return list(range(rank, streams, world_size))


def worker_streams(local: int, worker: int, workers: int) -> list[int]:
    """Positions (in the rank's stream list of length ``local``) that loader worker ``worker``
    of ``workers`` reads: every ``workers``-th, so any count divides the work evenly."""
    return list(range(worker, local, workers))


def stream_seed(seed: int, stream: int, streams: int) -> int:
    """The seed of one stream's epoch (``seed`` is the epoch's: base seed + epoch): distinct for
    every (epoch, stream), and ``seed`` itself with one stream."""
    return seed * streams + stream


def batch_order(batch_counts: list[int]) -> list[tuple[int, int]]:
    """The rank's epoch as (stream position, batch of that stream): round-robin over the
    streams, a stream left out once it has no batches left. ``batch_counts[j]``: stream
    ``j``'s full batches."""
    order = []
    for m in range(max(batch_counts, default=0)):
        order += [(j, m) for j, count in enumerate(batch_counts) if m < count]
    return order
