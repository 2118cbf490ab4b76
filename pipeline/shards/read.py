"""Reading shards: whole splits, streamed epochs (seeded, split by rank and loader worker),
and the codec that decodes a folder's samples.

A folder's manifest names its modality; ``codec_for`` looks the codec up in the registry
(``CODECS``: ``pipeline/modalities/<name>/codec.py``), so ``load_split`` and
``stream_batches`` return uint8 ``[N, C, H, W]`` images for an image folder and packed int64
``[N, 2, L]`` token ids and attention for a text folder, without this layer importing the
modalities. Every shard is verified (sha256) and its sample count checked
(``pipeline/shards/verify.py``).
"""

from __future__ import annotations

import functools
import itertools
from collections import Counter
from pathlib import Path
from typing import Iterator

import torch
import webdataset as wds

from pipeline.errors import UserError
from pipeline.registry import CODECS
from pipeline.shards import streams
from pipeline.shards.manifest import modality, read_manifest, recreate_hint
from pipeline.shards.verify import blame, check_counts, reraise_corrupt, shard_digests, shard_paths, verified_reader


def codec_for(shard_dir: str | Path, manifest: dict):
    """How the samples of a shard folder decode and batch, from its manifest's modality: the
    codec registered under that name (``CODECS``), made by its ``of(shard_dir, manifest)``
    (a text folder's tokenizer is loaded and checked now). A codec has ``decode(sample) ->
    item`` and ``batch(items) -> tensor``."""
    return CODECS.get(modality(manifest)).of(shard_dir, manifest)


def _decode(sample: dict, codec, recreate: str, digests: dict[str, str] | None = None) -> tuple[object, int]:
    """One sample -> its ``codec``-decoded item (an image, a text) and its label (-1 if none);
    a failure names the sample and the fix (``recreate``). ``digests`` (a reader that
    verifies while streaming): a failure first checks the shard."""
    try:
        item = codec.decode(sample)
        label = int(sample["cls"]) if "cls" in sample else -1
    except Exception as err:  # noqa: BLE001 - only decoding stored bytes happens here: any failure is the data's
        if digests is not None:
            blame(sample.get("__url__"), digests, recreate)
        raise UserError(
            f"cannot decode sample {sample.get('__key__')!r} in shard {sample.get('__url__')} "
            f"({type(err).__name__}: {err}); {recreate}"
        ) from err
    return item, label


def _to_batch(items: list, labels: list[int], codec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, labels int64 [B])``: x uint8 ``[B, C, H, W]`` images or int64 ``[B, 2, L]`` packed text."""
    return codec.batch(items), torch.tensor(labels, dtype=torch.long)


def read_in_order(shard_dir: str | Path, split: str, codec) -> tuple[list, list[int]]:
    """Every sample of a split decoded by ``codec``, in shard order, with its label (-1 if none)."""
    manifest = read_manifest(shard_dir)
    recreate = recreate_hint(manifest)
    paths = shard_paths(shard_dir, split)
    ds = wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None,
                        handler=functools.partial(reraise_corrupt, recreate=recreate), empty_check=False)
    items, labels = [], []
    read = Counter({p: 0 for p in paths})
    for sample in ds:
        item, label = _decode(sample, codec, recreate)
        items.append(item)
        labels.append(label)
        read[sample["__url__"]] += 1
    check_counts(shard_dir, manifest, split, read, paths)
    if not items:
        raise UserError(f"split {split!r} in {shard_dir} is empty; {recreate}")
    return items, labels


def load_split(shard_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in shard order: uint8 images ``[N, C, H, W]`` (text: packed int64 ``[N, 2, L]``)
    and labels ``[N]`` (-1 if none); every DDP rank gets all of it (a protocol splits its
    training batches itself)."""
    c = codec_for(shard_dir, read_manifest(shard_dir))
    return _to_batch(*read_in_order(shard_dir, split, c), c)


def stream_batches(
    shard_dir: str | Path, split: str | tuple[str, ...], batch_size: int, shuffle_buffer: int, seed: int,
    rank: int | None = None, world_size: int | None = None, ordered: bool = False, skip_batches: int = 0,
    batch_slice: tuple[int, int] = (0, 1), drop_last: bool = True, indexed: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled uint8 batches ``([B, C, H, W], [B])`` streamed from the shards
    (a text shard folder: packed int64 ``[B, 2, L]``, see ``codec_for``).

    Shard order and the sample shuffle buffer are seeded, so an epoch's order depends only
    on ``seed`` (pass ``base_seed + epoch``) and a resumed run sees the same batches. The
    last incomplete batch is dropped (contrastive losses want equal batch sizes).

    Under DDP (``rank``/``world_size``, default: this process's) every rank reads the same
    seeded stream and keeps every ``world_size``-th sample (``split_by_rank``), and every rank
    yields exactly ``count // (batch_size * world_size)`` batches: the same number whatever
    the shard count (3 shards on 2 ranks, 6 on 4), so no rank leaves the epoch while the
    others wait in an all-reduce. With one process this is the whole stream, as before.
    Each rank decodes only its own samples; the tar bytes of the others are read and
    skipped (a rank's own samples are all decoded, so a corrupt one fails on its rank even
    past the batches it yields), which also lets every rank check every shard's sample count against the
    manifest once the epoch is read to the end.

    ``ordered``: no shuffling at all, the samples in shard order (``load_split``'s order), so
    the first batch of ``k`` images is the split's first ``k``, decoded without the rest.

    ``skip_batches``: the epoch from its batch ``skip_batches`` on (a resume inside an
    epoch): the same batches as without it, less the first ones, whose samples are read and
    counted but not decoded.

    ``batch_slice=(i, n)``: only the batches ``skip_batches + i``, ``+ i + n``, ... of them
    (a DataLoader worker ``i`` of ``n``, ``pipeline/data/loader.py``); the others' samples
    are read and counted, not decoded. The ``n`` slices interleaved are the whole epoch.

    ``drop_last=False`` (one process, no ``batch_slice``): also the last, smaller batch, so
    the batches hold every sample (feature extraction).

    ``split`` may name several splits (``("train", "val")``): their shards make one stream
    (a subset of them: ``write_subset``).

    A shard folder written with ``data.streams`` S > 1 (its manifest's ``"streams"``) is read
    by virtual streams instead (``_stream_epoch``): a rank reads only its streams' shards and
    a worker (``batch_slice``) only its streams of those; ``epoch_steps`` gives the batch count.

    ``indexed``: yield ``(batch number in the rank's epoch, batch)`` (the loader puts the
    workers' batches back in order with it).
    """
    from pipeline import dist

    rank = dist.rank() if rank is None else rank
    world_size = dist.world_size() if world_size is None else world_size
    manifest = read_manifest(shard_dir)
    splits = (split,) if isinstance(split, str) else tuple(split)
    paths_of = {s: shard_paths(shard_dir, s, verify=False) for s in splits}  # verified while read
    if manifest.get("streams", 1) > 1 and not ordered:
        yield from _stream_epoch(shard_dir, manifest, splits, paths_of, batch_size, shuffle_buffer, seed, rank,
                                 world_size, skip_batches, batch_slice, indexed)
        return
    paths = [p for s in splits for p in paths_of[s]]
    samples_codec = codec_for(shard_dir, manifest)
    digests, recreate = shard_digests(shard_dir, manifest), recreate_hint(manifest)
    total = sum(manifest["splits"][s]["count"] for s in splits)
    n_batches = total // (batch_size * world_size) if drop_last else -(-total // batch_size)
    read: Counter[str] = Counter({p: 0 for p in paths})  # a shard that yields nothing counts as 0
    # Shards are split neither by node nor by DataLoader worker; samples are split by rank
    # below, and batches by worker (``batch_slice``).
    ds = verified_reader(paths, digests, recreate, seed, shuffle_shards=not ordered,
                 shuffle_buffer=None if ordered else shuffle_buffer)
    offset, stride = batch_slice
    items, labels, mine = [], [], 0
    for sample in split_by_rank(ds, rank, world_size):
        read[sample["__url__"]] += 1
        if sample.get("__mine__") is False:
            continue  # another rank's sample: counted, not decoded
        batch, mine = mine // batch_size, mine + 1  # the batch of this rank's epoch the sample is in
        if batch < skip_batches or (batch - skip_batches) % stride != offset:
            continue  # before the resume position, or another worker's batch: counted, not decoded
        item, label = _decode(sample, samples_codec, recreate, digests)
        items.append(item)
        labels.append(label)
        if len(items) == batch_size:
            if batch < n_batches:  # a rank with a sample more than others drops its extra batch
                out = _to_batch(items, labels, samples_codec)
                yield (batch, out) if indexed else out
            items, labels = [], []
    for s in splits:
        check_counts(shard_dir, manifest, s, {p: read[p] for p in paths_of[s]}, paths_of[s])
    if items and not drop_last:
        yield _to_batch(items, labels, samples_codec)


def _stream_layout(manifest: dict, splits: tuple[str, ...], paths_of: dict[str, list[str]]) -> tuple[list, list]:
    """Each virtual stream's shard paths and sample count (``streams``: shard ``i`` of a split,
    in file order, is stream ``i % S``'s)."""
    n = manifest["streams"]
    stream_paths: list[list[str]] = [[] for _ in range(n)]
    counts = [0] * n
    for s in splits:
        for i, (path, count) in enumerate(zip(paths_of[s], manifest["splits"][s]["shard_counts"].values())):
            stream_paths[streams.stream_of(i, n)].append(path)
            counts[streams.stream_of(i, n)] += count
    return stream_paths, counts


def epoch_steps(shard_dir: str | Path, split: str | tuple[str, ...], batch_size: int, world_size: int) -> int:
    """Batches each rank gets in an epoch of ``stream_batches`` (drop_last): the same on every rank."""
    manifest = read_manifest(shard_dir)
    splits = (split,) if isinstance(split, str) else tuple(split)
    if manifest.get("streams", 1) == 1:
        return sum(manifest["splits"][s]["count"] for s in splits) // (batch_size * world_size)
    _, counts = _stream_layout(manifest, splits, {s: list(manifest["splits"][s]["shards"]) for s in splits})
    return min(sum(counts[s] // batch_size for s in streams.rank_streams(len(counts), r, world_size))
               for r in range(world_size))


def _stream_epoch(shard_dir, manifest: dict, splits: tuple[str, ...], paths_of: dict[str, list[str]], batch_size: int,
                  shuffle_buffer: int, seed: int, rank: int, world_size: int, skip_batches: int,
                  batch_slice: tuple[int, int], indexed: bool) -> Iterator:
    """``stream_batches`` on a shard folder of ``S > 1`` virtual streams (``pipeline/shards/streams.py``):
    this rank's loader worker ``batch_slice[0]`` of ``batch_slice[1]`` opens only its streams'
    shards, each stream through its own seeded shuffle buffer (``shuffle_buffer * world_size / S``
    samples: ``shuffle_buffer`` per rank), and yields its batches of the rank's epoch."""
    n_streams = manifest["streams"]
    mine = streams.rank_streams(n_streams, rank, world_size)
    stream_paths, counts = _stream_layout(manifest, splits, paths_of)
    n_steps = epoch_steps(shard_dir, splits, batch_size, world_size)
    order = streams.batch_order([counts[s] // batch_size for s in mine])[:n_steps]
    worker, n_workers = batch_slice
    positions = streams.worker_streams(len(mine), worker, n_workers)
    codec = codec_for(shard_dir, manifest)
    digests, recreate = shard_digests(shard_dir, manifest), recreate_hint(manifest)
    buffer = max(1, shuffle_buffer * world_size // n_streams)
    readers = {j: iter(verified_reader(stream_paths[mine[j]], digests, recreate, streams.stream_seed(seed, mine[j], n_streams),
                               shuffle_shards=True, shuffle_buffer=buffer)) for j in positions}
    read: Counter[str] = Counter({p: 0 for j in positions for p in stream_paths[mine[j]]})
    for k, (j, _) in enumerate(order):
        if j not in readers:
            continue  # another worker's stream
        items, labels = [], []
        for sample in itertools.islice(readers[j], batch_size):
            read[sample["__url__"]] += 1
            if k >= skip_batches:  # before a resume position: read, not decoded
                item, label = _decode(sample, codec, recreate, digests)
                items.append(item)
                labels.append(label)
        if k >= skip_batches:
            out = _to_batch(items, labels, codec)
            yield (k, out) if indexed else out
    for reader in readers.values():  # the rest: every shard verified and counted to its end
        for sample in reader:
            read[sample["__url__"]] += 1
    for s in splits:
        own = [p for p in paths_of[s] if p in read]
        check_counts(shard_dir, manifest, s, {p: read[p] for p in own}, paths_of[s])


def split_batches(shard_dir: str | Path, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A whole split in shard order, ``batch_size`` samples at a time (the last batch smaller),
    in this process alone: what features and predictions are computed from without holding it."""
    return stream_batches(shard_dir, split, batch_size, 1, seed=0, rank=0, world_size=1, ordered=True, drop_last=False)


def first_samples(shard_dir: str | Path, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's first ``n`` samples (all, if it has fewer) and labels in shard order, what
    ``load_split(...)[:n]`` gives, decoding only those; the same on every rank."""
    n = min(n, read_manifest(shard_dir)["splits"][split]["count"])
    return next(stream_batches(shard_dir, split, n, 1, seed=0, rank=0, world_size=1, ordered=True))


def split_by_rank(samples: Iterator[dict], rank: int, world_size: int) -> Iterator[dict]:
    """Every sample of ``samples``, marked ``__mine__`` False unless its position in the
    stream is ``rank`` modulo ``world_size`` (DistributedSampler's interleaved assignment
    over a stream every rank reads identically). Nothing is marked with one process."""
    if world_size == 1:
        yield from samples
        return
    for i, sample in enumerate(samples):
        if i % world_size != rank:
            sample["__mine__"] = False
        yield sample
