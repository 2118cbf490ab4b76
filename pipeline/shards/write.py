"""Writing shards: WebDataset tars (byte-identical for the same input), the streaming writer of
samples by reference with its pixel statistics and resume journal, and subset copies.

A sample is ``{__key__: <split>_<index>, <ext>: bytes, cls}``; pretrain shards carry no
``cls`` so pretraining cannot use labels. ``mtime=0`` and a fixed owner make a tar's bytes
depend only on its samples.

``write_shards`` never holds a split in memory: samples come as references (``refs``:
``reader``, ``index``, ``labels``, ``classes``, ``skipped``) and are loaded and encoded by the
worker pool (``pipeline/shards/pool.py``) in the format the modality gives
(``pipeline/modalities/image/codec.py``: ``SampleFormat``, ``write_image_shards``); the
normalisation stats of the pretrain split are exact integer sums. Shards and manifest are
byte-identical for any number of workers, and for a run resumed from its ``Journal``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import pickle
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import webdataset as wds
from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.shards import pool as encoding
from pipeline.shards import streams
from pipeline.shards.manifest import read_manifest, recreate_hint, write_manifest
from pipeline.shards.verify import reraise_corrupt, sha256, shard_paths


def write_split(data, out_dir: Path, split: str, shard_size: int, with_labels: bool,
                samples: Iterator[tuple[bytes, np.ndarray | None]], ext: str,
                totals: np.ndarray | None = None, sizes: list[int] | None = None,
                journal: "Journal | None" = None) -> dict[str, int]:
    """Write ``{split}-NNNNNN.tar`` shards in dataset order; returns {file name: sample count}.

    ``data``: the split's ``labels`` (and length); ``samples``: its samples' bytes (stored under
    ``ext``) and pixel sums in order, less those of shards the ``journal`` already holds (a
    resumed stage keeps them). ``totals``: int64 ``[2, C]`` that the samples' pixel sums are added
    to. ``sizes``: the shards' sample counts (default: ``shard_size`` each, the last smaller)."""
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


def _fingerprint(refs: dict, plan: dict, fmt: tuple, source: dict) -> str:
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


def write_shards(refs: dict, out_dir: Path, shard_size: int, source: dict, fmt, workers: int = 1,
                 n_streams: int = 1, resume: bool = False) -> dict:
    """Write every split and the manifest into ``out_dir`` (the manifest is written last, so
    a crash leaves no manifest and readers refuse the dir); returns the manifest.

    ``refs``: ``{split: samples by reference}`` (``pretrain`` first), loaded and stored as
    ``fmt`` says (``fmt.encode``, ``fmt.ext``; ``fmt.manifest_keys()`` go in the manifest) by
    ``workers`` processes, streaming: no split is held in memory. The bytes written do not
    depend on ``workers``. ``source``: the data params, recorded in the manifest.

    ``n_streams`` > 1 (``data.streams``): each split in a multiple of ``n_streams`` shards, every
    virtual stream the same number of samples (``streams.shard_sizes``), recorded in the
    manifest. ``resume``: keep the finished shards of an interrupted run on the same inputs
    (``Journal``) and write only the rest; the result is byte-identical either way."""
    small = {name: len(d) for name, d in refs.items() if len(d) < n_streams}
    if small:
        raise UserError(f"data.streams={n_streams} exceeds the samples of split(s) {small}: every stream needs "
                        "samples of every split; lower data.streams (1: no virtual streams)")
    plan = {name: streams.shard_sizes(len(d), shard_size, n_streams) for name, d in refs.items()}
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
                tasks += [(reader_id[id(data.reader)], data.index[i : min(i + encoding.CHUNK, start + size)],
                           name == "pretrain") for i in range(start, start + size, encoding.CHUNK)]
            start += size

    manifest = {
        "source": source,
        **fmt.manifest_keys(),
        **({"streams": n_streams} if n_streams > 1 else {}),
        "classes": list(refs["pretrain"].classes),
        # per-channel stats of the pretrain split, used by the encoder's input normalisation
        "mean": None,
        "std": None,
        "splits": {},
    }
    manifest["skipped_files"] = skipped_files(refs)
    totals = np.zeros((2, fmt.channels), np.int64)
    with encoding.worker_pool(readers, fmt, workers) as pool, contextlib.closing(
            encoding.encoded(tasks, readers, fmt, pool, workers * encoding.TASKS_PER_WORKER)) as encoded, \
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
                        handler=functools.partial(reraise_corrupt, recreate=recreate_hint(manifest)), empty_check=False)
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
