"""The shard writer's encoding worker pool: samples by reference, loaded and encoded a chunk
at a time by worker processes, in order, with a bounded number of chunks in flight.

A format ``fmt`` (the image codec's ``SampleFormat``) turns sample ``i`` of a picklable
``reader`` into its stored bytes and the pixels the readers will decode
(``fmt.encode(reader, i) -> (bytes, uint8 [H, W, C])``); the workers return the bytes and,
for the pretrain split, the pixels' exact integer sums (``pixel_sums``). The bytes and their
order do not depend on the number of workers.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections import deque
from typing import Iterator

import numpy as np

from pipeline.errors import ignore_interrupts, interrupts_ignored

# Samples per task sent to a worker, and tasks in flight per worker: together they bound the
# encoded samples held at once (neither changes the output).
CHUNK = 32
TASKS_PER_WORKER = 4


def pixel_sums(image: np.ndarray) -> np.ndarray:
    """Exact per-channel sums of the pixel values and of their squares, int64 ``[2, C]``."""
    values = np.arange(256, dtype=np.int64)
    out = np.empty((2, image.shape[-1]), np.int64)
    for c in range(image.shape[-1]):
        counts = np.bincount(image[..., c].ravel(), minlength=256).astype(np.int64)
        out[0, c], out[1, c] = counts @ values, counts @ (values * values)
    return out


def encode_chunk(reader, index: np.ndarray, fmt, stats: bool) -> list[tuple[bytes, np.ndarray | None]]:
    """Samples ``index`` of ``reader`` encoded by ``fmt``: (bytes, pixel sums int64 ``[2, C]`` if
    ``stats``) each."""
    out = []
    for i in index:
        data, pixels = fmt.encode(reader, i)
        out.append((data, pixel_sums(pixels) if stats else None))
    return out


_WORKER: dict = {}  # a worker process's readers and format (set by _init_worker)


def _init_worker(readers: list, fmt) -> None:
    ignore_interrupts()  # Ctrl-C: the main process terminates the pool (a worker killed mid-task can hang it)
    _WORKER.update(readers=readers, fmt=fmt)


def _encode_task(task: tuple[int, np.ndarray, bool]) -> list[tuple[bytes, np.ndarray | None]]:
    reader_id, index, stats = task
    return encode_chunk(_WORKER["readers"][reader_id], index, _WORKER["fmt"], stats)


def encoded(tasks: list[tuple[int, np.ndarray, bool]], readers: list, fmt, pool,
            window: int) -> Iterator[tuple[bytes, np.ndarray | None]]:
    """Every sample of ``tasks`` encoded, in order. With a pool, at most ``window`` tasks
    are submitted and not yet consumed (Pool.imap would read ahead without bound and keep
    every finished result until consumed)."""
    if pool is None:
        for reader_id, index, stats in tasks:
            yield from encode_chunk(readers[reader_id], index, fmt, stats)
        return
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(_encode_task, (task,)))
        if len(pending) >= window:
            yield from pending.popleft().get()
    while pending:
        yield from pending.popleft().get()


@contextlib.contextmanager
def worker_pool(readers: list, fmt, workers: int):
    """A pool of ``workers`` processes (None for one: everything runs in this process);
    terminated on leaving, also on an error."""
    if workers <= 1:
        yield None
        return
    for reader in readers:  # e.g. an IDX file decompressed once, shared by the forked workers
        getattr(reader, "prepare", lambda: None)()
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    try:
        with interrupts_ignored():  # the workers start with Ctrl-C ignored: the main process handles it
            pool = ctx.Pool(workers, _init_worker, (readers, fmt))
    except OSError as err:  # e.g. no /dev/shm for the pool's locks: same bytes, one process
        print(f"warning: cannot start {workers} worker processes ({err}); encoding in this process", file=sys.stderr)
        pool = None
    if pool is None:
        yield None
        return
    with pool:
        yield pool
