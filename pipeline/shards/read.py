"""WebDataset tar shards: writing (byte-identical for the same input) and reading.

A sample is ``{__key__, png, cls}`` (``jpg`` instead of ``png`` with ``data.image_format:
jpeg``; such a manifest says ``"image_format": "jpeg"``, a manifest without the key is png);
pretrain shards carry no ``cls`` so pretraining cannot use labels. ``manifest.json`` records
counts (per split and per shard), classes, image format, normalisation stats and the sha256
of every shard.

The writer never holds a split in memory: samples come as references (``SampleRefs``) and
are loaded, resized and encoded a chunk at a time by a pool of worker processes, in order,
with a bounded number of chunks in flight; the normalisation stats are exact integer sums.
Shards and manifest are byte-identical for any number of workers.

Verification is paid once: ``stream_batches`` (training, features) hashes each shard's bytes
as it reads them and fails at the shard's end, naming it, if the sha256 differs from the
manifest (a sample that does not decode first has its shard hashed, so a corrupt shard is
named as such), so nothing is read before the first batch but the samples it needs. The
other readers (``load_split``, ``write_subset``) check a shard's sha256 once per process
before trusting it. Every reader checks that a shard gave as many samples as the manifest
says. ``IO`` counts the bytes read and the tar members parsed (the scale tests' counters).

Text shards (``pipeline/modalities/text/shards.py``: ``{__key__, txt, cls}``, a manifest with
``"modality": "text"``) are read by the same readers: the manifest picks the codec that
decodes a sample and makes a batch (``sample_codec``), so ``load_split`` and
``stream_batches`` return packed int64 ``[N, 2, L]`` token ids and attention for text where
they return uint8 ``[N, C, H, W]`` images.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import pickle
import sys
from collections import Counter, deque
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from tqdm import tqdm

from pipeline.data import streams
from pipeline.data.streams import shard_sizes as streams_sizes
from pipeline.modalities.image.sources import ArrayReader, ImageSet, SampleRefs, centre_square, load_image, load_image_short_side
from pipeline.errors import UserError, ignore_interrupts, interrupts_ignored

MANIFEST = "manifest.json"
_RECREATE = "re-create the shards with 'dvc repro -f shard'"
_RECREATE_TEXT = "re-create the shards with 'dvc repro -f text-shard'"
# Shards whose sha256 this process has already checked, keyed by (path, digest, size,
# mtime): an epoch loop re-reads the same shards, and hashing them again each epoch costs a
# full extra read. Size and mtime make a shard rewritten in place get hashed again.
_VERIFIED: set[tuple[str, str, int, int]] = set()
# Bytes of shard files read (hashing included) and samples parsed from tars, in this process.
IO: Counter[str] = Counter()


def _png(image: np.ndarray) -> bytes:
    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)  # PIL's PNG encoder is deterministic
    return buf.getvalue()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            IO["bytes"] += len(block)
            h.update(block)
    return h.hexdigest()


class SampleFormat(NamedTuple):
    """How samples are stored: ``size`` x ``size`` (any aspect squashed), or with
    ``store_size`` the short side resized to it and the centre cropped square (``store_aspect``:
    not cropped, the aspect kept; readers crop the centre square); PNG or JPEG."""

    size: int
    channels: int
    store_size: int | None = None
    image_format: str = "png"  # png | jpeg
    jpeg_quality: int = 90
    store_aspect: bool = False  # with store_size: short side to store_size, aspect kept, no crop

    @property
    def side(self) -> int:
        return self.store_size or self.size

    @property
    def ext(self) -> str:  # the sample's key in the tar: png or jpg
        return "png" if self.image_format == "png" else "jpg"


# Samples per task sent to a worker, and tasks in flight per worker: together they bound the
# encoded samples held at once (neither changes the output).
CHUNK = 32
TASKS_PER_WORKER = 4


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    img = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)  # deterministic for a libjpeg
    return buf.getvalue()


def _pixel_sums(image: np.ndarray) -> np.ndarray:
    """Exact per-channel sums of the pixel values and of their squares, int64 ``[2, C]``."""
    values = np.arange(256, dtype=np.int64)
    out = np.empty((2, image.shape[-1]), np.int64)
    for c in range(image.shape[-1]):
        counts = np.bincount(image[..., c].ravel(), minlength=256).astype(np.int64)
        out[0, c], out[1, c] = counts @ values, counts @ (values * values)
    return out


def encode_chunk(reader, index: np.ndarray, fmt: SampleFormat, stats: bool) -> list[tuple[bytes, np.ndarray | None]]:
    """Samples ``index`` of ``reader``: (encoded bytes, pixel sums if ``stats``) each."""
    out = []
    for i in index:
        if fmt.store_aspect and fmt.store_size:
            image = load_image_short_side(reader, i, fmt.store_size, fmt.channels)
        else:
            image = load_image(reader, i, fmt.size, fmt.channels, fmt.store_size)
        data = _png(image) if fmt.image_format == "png" else _jpeg(image, fmt.jpeg_quality)
        # stats over the centre square: what the readers decode (side x side pixels each)
        out.append((data, _pixel_sums(centre_square(image, fmt.side)) if stats else None))
    return out


_WORKER: dict = {}  # a worker process's readers and format (set by _init_worker)


def _init_worker(readers: list, fmt: SampleFormat) -> None:
    ignore_interrupts()  # Ctrl-C: the main process terminates the pool (a worker killed mid-task can hang it)
    _WORKER.update(readers=readers, fmt=fmt)


def _encode_task(task: tuple[int, np.ndarray, bool]) -> list[tuple[bytes, np.ndarray | None]]:
    reader_id, index, stats = task
    return encode_chunk(_WORKER["readers"][reader_id], index, _WORKER["fmt"], stats)


def _encoded(tasks: list[tuple[int, np.ndarray, bool]], readers: list, fmt: SampleFormat, pool,
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
def _worker_pool(readers: list, fmt: SampleFormat, workers: int):
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


def write_split(data: ImageSet | SampleRefs, out_dir: Path, split: str, shard_size: int, with_labels: bool,
                samples: Iterator[tuple[bytes, np.ndarray | None]] | None = None, ext: str = "png",
                totals: np.ndarray | None = None, sizes: list[int] | None = None,
                journal: "Journal | None" = None) -> dict[str, int]:
    """Write ``{split}-NNNNNN.tar`` shards in dataset order; returns {file name: sample count}.

    ``samples``: the split's encoded samples in order (default: ``data``, an ``ImageSet``,
    encoded as PNG here), less those of shards the ``journal`` already holds (a resumed
    stage keeps them). ``totals``: int64 ``[2, C]`` that the samples' pixel sums are added
    to. ``sizes``: the shards' sample counts (default: ``shard_size`` each, the last smaller)."""
    if samples is None:
        fmt = SampleFormat(int(data.images.shape[1]), int(data.images.shape[3]))
        samples = iter(encode_chunk(ArrayReader(data.images), np.arange(len(data)), fmt, totals is not None))
    sizes = streams.shard_sizes(len(data), shard_size, 1) if sizes is None else sizes
    names = {}
    start = 0
    for number, size in enumerate(sizes):
        name = f"{split}-{number:06d}.tar"
        kept = journal.kept.get(name) if journal is not None else None
        if kept is not None:  # written and verified by an earlier, interrupted run
            if totals is not None:
                totals += np.array(kept["sums"], np.int64)
        else:
            shard_sums = np.zeros_like(totals) if totals is not None else None
            # mtime=0 and fixed user/group make the tar bytes depend only on the samples.
            with wds.TarWriter(str(out_dir / name), mtime=0, user="ssl", group="ssl") as sink:
                for i in range(start, start + size):
                    encoded, sums = next(samples)
                    sample = {"__key__": f"{split}_{i:08d}", ext: encoded}
                    if with_labels:
                        sample["cls"] = str(int(data.labels[i])).encode()
                    if totals is not None:
                        shard_sums += sums
                    sink.write(sample)
            if totals is not None:
                totals += shard_sums
            if journal is not None:
                journal.add(name, size, shard_sums)
        names[name] = size
        start += size
    return names


class Journal:
    """The shards a shard stage has finished, in ``out_dir/_written.jsonl`` (one line each:
    name, count, sha256, pixel sums), so a killed stage restarted on the same inputs keeps
    them. The first line is the run's fingerprint (inputs, format, shard plan): another
    run's leftovers are removed, not kept. Shards are byte-deterministic, so a kept shard is
    the shard this run would write; it is kept only if its sha256 still matches."""

    NAME = "_written.jsonl"

    def __init__(self, out_dir: Path, fingerprint: str, resume: bool):
        self.path, self.kept = out_dir / self.NAME, {}
        out_dir.mkdir(parents=True, exist_ok=True)
        lines = self.path.read_text().splitlines() if resume and self.path.is_file() else []
        if lines and lines[0] == fingerprint:
            for line in lines[1:]:
                try:
                    entry = json.loads(line)
                except ValueError:
                    break  # the line a kill cut short: that shard is rewritten
                shard = out_dir / entry["name"]
                if shard.is_file() and sha256(shard) == entry["sha256"]:
                    self.kept[entry["name"]] = entry
        for old in out_dir.glob("*"):  # everything else is an unfinished or stale file
            if old.name not in self.kept:
                old.unlink()
        with open(self.path, "w") as f:
            f.write(fingerprint + "\n" + "".join(json.dumps(e) + "\n" for e in self.kept.values()))
        self.digests = {name: e["sha256"] for name, e in self.kept.items()}

    def add(self, name: str, count: int, sums: np.ndarray | None) -> None:
        """Record a shard once its bytes are on disk (hashed here: the manifest's sha256)."""
        shard = self.path.parent / name
        with open(shard, "rb+") as f:
            os.fsync(f.fileno())
        self.digests[name] = sha256(shard)
        entry = {"name": name, "count": count, "sha256": self.digests[name],
                 "sums": sums.tolist() if sums is not None else None}
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.path.unlink()


def _fingerprint(refs: dict, plan: dict, fmt: SampleFormat, source: dict) -> str:
    """What a split's shards are made from: readers, sample indices and labels, the shard
    sizes, the format and the data params (a resume keeps shards only of the same)."""
    h = hashlib.sha256(json.dumps([source, list(fmt), plan], sort_keys=True).encode())
    for name, data in refs.items():
        h.update(name.encode())
        h.update(pickle.dumps(data.reader))
        h.update(np.ascontiguousarray(data.index, np.int64).tobytes())
        h.update(np.ascontiguousarray(data.labels, np.int64).tobytes())
    return "fingerprint " + h.hexdigest()


def _mean_std(totals: np.ndarray, n_pixels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of pixel/255 from exact integer sums (exact to rounding)."""
    if n_pixels == 0:
        return [math.nan] * totals.shape[1], [math.nan] * totals.shape[1]
    mean, std = [], []
    for s, q in zip(totals[0].tolist(), totals[1].tolist()):
        mean.append(float(Fraction(s, 255 * n_pixels)))
        std.append(math.sqrt(Fraction(n_pixels * q - s * s, (255 * n_pixels) ** 2)))
    return mean, std


def _counted(samples: Iterator, bar) -> Iterator:
    """``samples`` unchanged, ticking the progress ``bar`` once per sample."""
    for sample in samples:
        bar.update()
        yield sample


def write_shards(splits: dict, out_dir: Path, shard_size: int, source: dict,
                 fmt: SampleFormat | None = None, workers: int = 1, n_streams: int = 1, resume: bool = False) -> dict:
    """Write every split and the manifest into ``out_dir`` (the manifest is written last, so
    a crash leaves no manifest and readers refuse the dir).

    ``splits``: ``ImageSet``s (arrays, stored as they are) or ``SampleRefs`` (loaded and
    stored as ``fmt`` says, by ``workers`` processes, streaming: no split is held in
    memory). The bytes written do not depend on ``workers``.

    ``n_streams`` > 1 (``data.streams``): each split in a multiple of ``n_streams`` shards, every
    virtual stream the same number of samples (``streams.shard_sizes``), recorded in the
    manifest. ``resume``: keep the finished shards of an interrupted run on the same inputs
    (``Journal``) and write only the rest; the result is byte-identical either way."""
    any_set = splits["pretrain"]
    if fmt is None:
        if not isinstance(any_set, ImageSet):
            raise TypeError("write_shards needs fmt for SampleRefs")
        fmt = SampleFormat(int(any_set.images.shape[1]), int(any_set.images.shape[3]))
    refs = {name: SampleRefs(ArrayReader(d.images), np.arange(len(d)), d.labels, d.classes, d.skipped)
            if isinstance(d, ImageSet) else d for name, d in splits.items()}
    small = {name: len(d) for name, d in refs.items() if len(d) < n_streams}
    if small:
        raise UserError(f"data.streams={n_streams} exceeds the samples of split(s) {small}: every stream needs "
                        "samples of every split; lower data.streams (1: no virtual streams)")
    plan = {name: streams_sizes(len(d), shard_size, n_streams) for name, d in refs.items()}
    journal = Journal(out_dir, _fingerprint(refs, plan, fmt, source), resume)
    readers: list = []  # the distinct readers, by identity; tasks name them by position
    reader_id: dict[int, int] = {}
    tasks = []
    for name, data in refs.items():
        if id(data.reader) not in reader_id:
            reader_id[id(data.reader)] = len(readers)
            readers.append(data.reader)
        start = 0
        for number, size in enumerate(plan[name]):  # the samples of the shards still to write
            if f"{name}-{number:06d}.tar" not in journal.kept:
                tasks += [(reader_id[id(data.reader)], data.index[i : min(i + CHUNK, start + size)], name == "pretrain")
                          for i in range(start, start + size, CHUNK)]
            start += size

    manifest = {
        "source": source,
        "image_size": fmt.side,
        "channels": fmt.channels,
        **({"image_format": fmt.image_format} if fmt.image_format != "png" else {}),
        **({"store_aspect": True} if fmt.store_aspect and fmt.store_size else {}),
        **({"streams": n_streams} if n_streams > 1 else {}),
        "classes": list(any_set.classes),
        # per-channel stats of the pretrain split, used by the encoder's input normalisation
        "mean": None,
        "std": None,
        "splits": {},
    }
    manifest["skipped_files"] = skipped_files(splits)
    totals = np.zeros((2, fmt.channels), np.int64)
    with _worker_pool(readers, fmt, workers) as pool, contextlib.closing(
            _encoded(tasks, readers, fmt, pool, workers * TASKS_PER_WORKER)) as encoded, \
            tqdm(total=sum(len(d) for d in refs.values()), desc="shard", unit="img", disable=None) as bar:
        samples = _counted(encoded, bar)  # a bar on a terminal only (tqdm disables itself when stderr is not a TTY)
        for split, data in refs.items():
            names = write_split(data, out_dir, split, shard_size, with_labels=split != "pretrain", samples=samples,
                                ext=fmt.ext, totals=totals if split == "pretrain" else None, sizes=plan[split],
                                journal=journal)
            manifest["splits"][split] = split_entry(data, split, names, out_dir, journal.digests)
    mean, std = _mean_std(totals, len(refs["pretrain"]) * fmt.side * fmt.side)
    manifest["mean"] = [round(m, 6) for m in mean]
    manifest["std"] = [round(s, 6) for s in std]
    journal.remove()
    write_manifest(out_dir, manifest)
    return manifest


def empty_dir(out_dir: Path) -> None:
    """Create ``out_dir`` or remove the files in it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*"):
        old.unlink()


def skipped_files(splits: dict) -> dict:
    """The manifest's record of the source files skipped (every split carries its source's list)."""
    skipped = sorted({f for data in splits.values() for f in data.skipped})
    return {"count": len(skipped), "examples": skipped[:10]}


def split_entry(data, split: str, names: dict[str, int], out_dir: Path, digests: dict[str, str] | None = None) -> dict:
    """A split's manifest entry: its count, per-class counts (None for pretrain: no labels),
    and each shard's sha256 (``digests``, hashed when written; else hashed now) and sample
    count (``names``: ``write_split``'s result)."""
    counts = np.bincount(data.labels, minlength=len(data.classes))
    digests = digests or {}
    return {
        "count": len(data),
        "per_class": {c: int(n) for c, n in zip(data.classes, counts)} if split != "pretrain" else None,
        "shards": {n: digests[n] if n in digests else sha256(out_dir / n) for n in names},
        "shard_counts": names,
    }


def write_manifest(out_dir: Path, manifest: dict) -> None:
    """``manifest.json``, written last and renamed into place: no manifest, no shards."""
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)


def read_manifest(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found: the shards are missing or incomplete; run 'dvc repro shard'")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}); {_RECREATE}") from None
    _check_stats(path, manifest)
    return manifest


def _check_stats(path: Path, manifest: dict) -> None:
    """An image manifest's normalisation statistics: one finite number per channel, std >= 0
    (NaN here would surface much later as a non-finite loss, blamed on the learning rate)."""
    if manifest.get("modality") == "text":
        return
    channels = manifest.get("channels")
    for key in ("mean", "std"):
        values = manifest.get(key)
        ok = isinstance(values, list) and len(values) == (channels or len(values)) and all(
            isinstance(v, (int, float)) and math.isfinite(v) and (key == "mean" or v >= 0) for v in values)
        if not ok:
            raise UserError(f"{path}: '{key}' is {values!r}, not {channels or 'one per channel'} finite "
                            f"{'non-negative ' if key == 'std' else ''}number(s) (the pretrain images' statistics); {_RECREATE}")


def _recreate(manifest: dict) -> str:
    """How to re-create the shard folder of ``manifest`` (the text shards have their own stage)."""
    return _RECREATE_TEXT if manifest.get("modality") == "text" else _RECREATE


def _verify(path: Path, digest: str, recreate: str = _RECREATE) -> None:
    """Check a shard's sha256 against the manifest, once per process (see ``_VERIFIED``)."""
    st = path.stat()
    key = (str(path.resolve()), digest, st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    if sha256(path) != digest:
        raise UserError(f"shard {path} is corrupt (sha256 differs from {MANIFEST}); {recreate}")
    _VERIFIED.add(key)


def shard_paths(shard_dir: str | Path, split: str, verify: bool = True) -> list[str]:
    """Paths of a split's shards in file order, each checked against the manifest's sha256
    (``verify=False``: only that it exists; the reader verifies while streaming)."""
    manifest = read_manifest(shard_dir)
    if split not in manifest["splits"]:
        raise UserError(f"split {split!r} not in {shard_dir}/{MANIFEST}; valid: {list(manifest['splits'])}")
    paths = []
    for name, digest in manifest["splits"][split]["shards"].items():
        path = Path(shard_dir) / name
        if not path.is_file():
            stage = "text-shard" if manifest.get("modality") == "text" else "shard"
            raise UserError(f"shard {path} is missing; run 'dvc checkout' or 'dvc repro {stage}'")
        if verify:
            _verify(path, digest, _recreate(manifest))
        paths.append(str(path))
    return paths


def _digests(shard_dir: str | Path, manifest: dict) -> dict[str, str]:
    """{shard path (as ``shard_paths`` gives it): its sha256 in the manifest}."""
    return {str(Path(shard_dir) / name): digest for info in manifest["splits"].values()
            for name, digest in info["shards"].items()}


def _corrupt(path: str | Path, recreate: str) -> UserError:
    return UserError(f"shard {path} is corrupt (sha256 differs from {MANIFEST}); {recreate}")


class _HashingFile:
    """A shard file read front to back, its bytes hashed (sha256) and counted as they go."""

    def __init__(self, path: str):
        self.path, self.file, self.hash = path, open(path, "rb"), hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        block = self.file.read(n)
        self.hash.update(block)
        IO["bytes"] += len(block)
        return block

    def check(self, digest: str, recreate: str) -> None:
        """Read what the tar reader left (end-of-archive padding), close, and fail naming the
        shard if its sha256 is not ``digest``; a match counts as verified in this process."""
        while self.read(1 << 20):
            pass
        self.file.close()
        if self.hash.hexdigest() != digest:
            raise _corrupt(self.path, recreate)
        st = Path(self.path).stat()
        _VERIFIED.add((str(Path(self.path).resolve()), digest, st.st_size, st.st_mtime_ns))

    def close(self) -> None:
        self.file.close()


def _open_verifying(sources: Iterator[dict], digests: dict[str, str], recreate: str) -> Iterator[dict]:
    """WebDataset's opener stage, hashing: each shard is checked when the tar reader asks for
    the next one (or the stream ends), i.e. once all its members were parsed."""
    for source in sources:
        stream = _HashingFile(source["url"])
        try:
            yield dict(source, stream=stream)
            stream.check(digests[source["url"]], recreate)
        finally:
            stream.close()


def _count_parsed(samples: Iterator[dict]) -> Iterator[dict]:
    for sample in samples:
        IO["samples"] += 1
        yield sample


def _blame(url: str | None, digests: dict[str, str], recreate: str) -> None:
    """Raise the corrupt-shard error if the shard ``url`` that failed to parse or decode does
    not match its sha256 (a damaged shard is named as such, not as a bad sample)."""
    if url in digests and sha256(Path(url)) != digests[url]:
        raise _corrupt(url, recreate)


def _reader(paths: list[str], digests: dict[str, str], recreate: str, seed: int, shuffle_shards: bool,
            shuffle_buffer: int | None):
    """The samples of ``paths``: shard order shuffled (seeded) unless not ``shuffle_shards``, then
    a seeded sample shuffle buffer if ``shuffle_buffer``; every shard verified while read.
    The same WebDataset pipeline (and so the same order) as before streaming verification,
    with the opener stage replaced by ``_open_verifying``."""

    def handler(exn: Exception) -> bool:
        _blame(next((a for a in exn.args if isinstance(a, str) and a in digests), None), digests, recreate)
        return _reraise_corrupt(exn, recreate)

    ds = wds.WebDataset(paths, shardshuffle=len(paths) if len(paths) > 1 and shuffle_shards else False, seed=seed,
                        nodesplitter=None, workersplitter=None, handler=handler, empty_check=False)
    (opener,) = [i for i, stage in enumerate(ds.pipeline) if isinstance(stage, wds.cache.StreamingOpen)]
    ds.pipeline[opener] = functools.partial(_open_verifying, digests=digests, recreate=recreate)
    ds.append(_count_parsed)  # before the shuffle buffer: every sample parsed from a tar
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, initial=shuffle_buffer, seed=seed)
    return ds


def _check_counts(shard_dir: str | Path, manifest: dict, split: str, read: dict[str, int], all_paths: list[str]) -> None:
    """Fail unless each shard in ``read`` ({path: samples read}, every shard this process
    opened) gave the manifest's count. Manifests from before per-shard counts only allow
    the split's total, checked when this process read every shard of the split."""
    info = manifest["splits"][split]
    per_shard = info.get("shard_counts")
    if per_shard is not None:
        for path, n in read.items():
            want = per_shard.get(Path(path).name)
            if n != want:
                raise UserError(f"shard {path} gave {n} samples but {MANIFEST} says {want}; {_recreate(manifest)}")
    elif sorted(read) == sorted(all_paths) and sum(read.values()) != info["count"]:
        raise UserError(
            f"split {split!r} in {shard_dir} gave {sum(read.values())} samples "
            f"but {MANIFEST} says {info['count']}; {_recreate(manifest)}"
        )


class ImageCodec(NamedTuple):
    """Image samples: ``png``/``jpg`` bytes -> uint8 ``[H, W, C]``; a batch is uint8 ``[B, C, H, W]``."""

    size: int | None  # None: unchecked
    channels: int
    crop: bool = False  # stored with the aspect kept (``store_aspect``): decode the centre square
    recreate = _RECREATE  # the fix named when a sample does not decode

    def decode(self, sample: dict) -> np.ndarray:
        with Image.open(io.BytesIO(sample["png"] if "png" in sample else sample["jpg"])) as img:
            arr = np.asarray(img.convert("L" if self.channels == 1 else "RGB"))
        if self.crop and min(arr.shape[:2]) == self.size:
            arr = centre_square(arr, self.size)
        if self.size is not None and arr.shape[:2] != (self.size, self.size):
            raise ValueError(f"image is {arr.shape[1]}x{arr.shape[0]}, {MANIFEST} says {self.size}x{self.size}")
        return arr.reshape(arr.shape[0], arr.shape[1], self.channels)

    def batch(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2).contiguous()


def sample_codec(shard_dir: str | Path, manifest: dict):
    """How the samples of a shard folder decode and batch, from its manifest: ``ImageCodec``,
    or for ``"modality": "text"`` a ``text_shards.TextCodec`` (its tokenizer loaded and checked now)."""
    if manifest.get("modality") == "text":
        from pipeline.modalities.text.shards import TextCodec

        return TextCodec.of(shard_dir, manifest)
    return ImageCodec(manifest.get("image_size"), manifest["channels"], manifest.get("store_aspect", False))


def _decode(sample: dict, codec, digests: dict[str, str] | None = None) -> tuple[object, int]:
    """One sample -> its ``codec``-decoded item (an image, a text) and its label (-1 if none).
    ``digests`` (a reader that verifies while streaming): a failure first checks the shard."""
    try:
        item = codec.decode(sample)
        label = int(sample["cls"]) if "cls" in sample else -1
    except Exception as err:  # noqa: BLE001 - only decoding stored bytes happens here: any failure is the data's
        if digests is not None:
            _blame(sample.get("__url__"), digests, codec.recreate)
        raise UserError(
            f"cannot decode sample {sample.get('__key__')!r} in shard {sample.get('__url__')} "
            f"({type(err).__name__}: {err}); {codec.recreate}"
        ) from err
    return item, label


def _to_batch(items: list, labels: list[int], codec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, labels int64 [B])``: x uint8 ``[B, C, H, W]`` images or int64 ``[B, 2, L]`` packed text."""
    return codec.batch(items), torch.tensor(labels, dtype=torch.long)


def _reraise_corrupt(exn: Exception, recreate: str = _RECREATE) -> bool:
    raise UserError(f"cannot read shard data ({exn}); {recreate}") from exn


def _read_in_order(shard_dir: str | Path, split: str, codec) -> tuple[list, list[int]]:
    """Every sample of a split decoded by ``codec``, in shard order, with its label (-1 if none)."""
    manifest = read_manifest(shard_dir)
    paths = shard_paths(shard_dir, split)
    ds = wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None,
                        handler=functools.partial(_reraise_corrupt, recreate=_recreate(manifest)), empty_check=False)
    items, labels = [], []
    read = Counter({p: 0 for p in paths})
    for sample in ds:
        item, label = _decode(sample, codec)
        items.append(item)
        labels.append(label)
        read[sample["__url__"]] += 1
    _check_counts(shard_dir, manifest, split, read, paths)
    if not items:
        raise UserError(f"split {split!r} in {shard_dir} is empty; {_recreate(manifest)}")
    return items, labels


def load_split(shard_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole split in shard order: uint8 images ``[N, C, H, W]`` (text: packed int64 ``[N, 2, L]``)
    and labels ``[N]`` (-1 if none); every DDP rank gets all of it (a protocol splits its
    training batches itself)."""
    c = sample_codec(shard_dir, read_manifest(shard_dir))
    return _to_batch(*_read_in_order(shard_dir, split, c), c)


def read_texts(shard_dir: str | Path, split: str) -> tuple[list[str], torch.Tensor]:
    """A text split's raw entries in shard order and their labels int64 ``[N]`` (-1 if none),
    untokenized (e.g. for the TF-IDF baseline)."""
    from pipeline.modalities.text.shards import TextCodec

    manifest = read_manifest(shard_dir)
    if manifest.get("modality") != "text":
        raise UserError(f"{shard_dir} holds image shards, not text; point --shards at a text shard folder")
    texts, labels = _read_in_order(shard_dir, split, TextCodec(manifest["max_length"]))
    return texts, torch.tensor(labels, dtype=torch.long)


def stream_batches(
    shard_dir: str | Path, split: str | tuple[str, ...], batch_size: int, shuffle_buffer: int, seed: int,
    rank: int | None = None, world_size: int | None = None, ordered: bool = False, skip_batches: int = 0,
    batch_slice: tuple[int, int] = (0, 1), drop_last: bool = True, indexed: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled uint8 batches ``([B, C, H, W], [B])`` streamed from the shards
    (a text shard folder: packed int64 ``[B, 2, L]``, see ``sample_codec``).

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
    samples_codec = sample_codec(shard_dir, manifest)
    digests = _digests(shard_dir, manifest)
    total = sum(manifest["splits"][s]["count"] for s in splits)
    n_batches = total // (batch_size * world_size) if drop_last else -(-total // batch_size)
    read: Counter[str] = Counter({p: 0 for p in paths})  # a shard that yields nothing counts as 0
    # Shards are split neither by node nor by DataLoader worker; samples are split by rank
    # below, and batches by worker (``batch_slice``).
    ds = _reader(paths, digests, _recreate(manifest), seed, shuffle_shards=not ordered,
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
        item, label = _decode(sample, samples_codec, digests)
        items.append(item)
        labels.append(label)
        if len(items) == batch_size:
            if batch < n_batches:  # a rank with a sample more than others drops its extra batch
                out = _to_batch(items, labels, samples_codec)
                yield (batch, out) if indexed else out
            items, labels = [], []
    for s in splits:
        _check_counts(shard_dir, manifest, s, {p: read[p] for p in paths_of[s]}, paths_of[s])
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
    """``stream_batches`` on a shard folder of ``S > 1`` virtual streams (``pipeline/data/streams.py``):
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
    codec = sample_codec(shard_dir, manifest)
    digests, recreate = _digests(shard_dir, manifest), _recreate(manifest)
    buffer = max(1, shuffle_buffer * world_size // n_streams)
    readers = {j: iter(_reader(stream_paths[mine[j]], digests, recreate, streams.stream_seed(seed, mine[j], n_streams),
                               shuffle_shards=True, shuffle_buffer=buffer)) for j in positions}
    read: Counter[str] = Counter({p: 0 for j in positions for p in stream_paths[mine[j]]})
    for k, (j, _) in enumerate(order):
        if j not in readers:
            continue  # another worker's stream
        items, labels = [], []
        for sample in itertools.islice(readers[j], batch_size):
            read[sample["__url__"]] += 1
            if k >= skip_batches:  # before a resume position: read, not decoded
                item, label = _decode(sample, codec, digests)
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
        _check_counts(shard_dir, manifest, s, {p: read[p] for p in own}, paths_of[s])


def split_batches(shard_dir: str | Path, split: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A whole split in shard order, ``batch_size`` samples at a time (the last batch smaller),
    in this process alone: what features and predictions are computed from without holding it."""
    return stream_batches(shard_dir, split, batch_size, 1, seed=0, rank=0, world_size=1, ordered=True, drop_last=False)


def first_samples(shard_dir: str | Path, split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's first ``n`` samples (all, if it has fewer) and labels in shard order, what
    ``load_split(...)[:n]`` gives, decoding only those; the same on every rank."""
    n = min(n, read_manifest(shard_dir)["splits"][split]["count"])
    return next(stream_batches(shard_dir, split, n, 1, seed=0, rank=0, world_size=1, ordered=True))


def write_subset(shard_dir: str | Path, splits: tuple[str, ...], keep: dict[str, np.ndarray], out_dir: Path,
                 shard_size: int = 10_000) -> int:
    """Copy the ``keep`` samples of ``splits`` (``{split: indices in shard order}``), still
    encoded, into ``out_dir`` as one split ``"subset"`` with its own manifest; returns their
    count. A protocol that trains many epochs on a small fraction of a large split streams
    this copy, reading only those samples each epoch instead of every sample of the splits."""
    manifest = read_manifest(shard_dir)
    kept = {s: frozenset(np.asarray(keep[s]).tolist()) for s in splits}
    paths = [p for s in splits for p in shard_paths(shard_dir, s)]
    ds = wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None,
                        handler=functools.partial(_reraise_corrupt, recreate=_recreate(manifest)), empty_check=False)
    names: dict[str, int] = {}
    sink, n = None, 0
    try:
        for sample in ds:
            if _sample_index(sample) not in kept[_sample_split(sample)]:
                continue
            if n % shard_size == 0:
                if sink is not None:
                    sink.close()
                name = f"subset-{n // shard_size:06d}.tar"
                sink, names[name] = wds.TarWriter(str(out_dir / name), mtime=0, user="ssl", group="ssl"), 0
            sink.write({k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")})
            names[name] += 1
            n += 1
    finally:
        if sink is not None:
            sink.close()
    entry = {"count": n, "shards": {name: sha256(out_dir / name) for name in names}, "shard_counts": names}
    # one split of its own shard layout: read as one stream, whatever the source folder's streams
    write_manifest(out_dir, {k: v for k, v in manifest.items() if k != "streams"} | {"splits": {"subset": entry}})
    return n


def _sample_split(sample: dict) -> str:
    """The split a sample was written for: its key is ``<split>_<index>`` (``write_split``)."""
    return sample["__key__"].rsplit("_", 1)[0]


def _sample_index(sample: dict) -> int:
    """A sample's position in its split, in shard order (``load_split``'s order)."""
    return int(sample["__key__"].rsplit("_", 1)[1])


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
