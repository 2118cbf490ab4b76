"""Shard integrity: sha256 checks, the verifying tar reader, and per-shard sample counts.

Verification is paid once. The streaming reader (``verified_reader``: training, features)
hashes each shard's bytes as it reads them and fails at the shard's end, naming it, if the
sha256 differs from the manifest (a sample that does not decode first has its shard hashed,
``blame``, so a corrupt shard is named as such), so nothing is read before the first batch
but the samples it needs. The other readers take ``shard_paths``, which checks a shard's
sha256 once per process before trusting it. Every reader checks that a shard gave as many
samples as the manifest says (``check_counts``). ``IO`` counts the bytes read and the tar
members parsed (the scale tests' counters).
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from pathlib import Path
from typing import Iterator

import webdataset as wds

from pipeline.errors import UserError
from pipeline.shards.manifest import MANIFEST, read_manifest, recreate_hint, shard_stage

# Shards whose sha256 this process has already checked, keyed by (path, digest, size,
# mtime): an epoch loop re-reads the same shards, and hashing them again each epoch costs a
# full extra read. Size and mtime make a shard rewritten in place get hashed again.
_VERIFIED: set[tuple[str, str, int, int]] = set()
# Bytes of shard files read (hashing included) and samples parsed from tars, in this process.
IO: Counter[str] = Counter()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            IO["bytes"] += len(block)
            h.update(block)
    return h.hexdigest()


def _verify(path: Path, digest: str, recreate: str) -> None:
    """Check a shard's sha256 against the manifest, once per process (see ``_VERIFIED``)."""
    st = path.stat()
    key = (str(path.resolve()), digest, st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    if sha256(path) != digest:
        raise _corrupt(path, recreate)
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
            raise UserError(f"shard {path} is missing; run 'dvc checkout' or 'dvc repro {shard_stage(manifest)}'")
        if verify:
            _verify(path, digest, recreate_hint(manifest))
        paths.append(str(path))
    return paths


def shard_digests(shard_dir: str | Path, manifest: dict) -> dict[str, str]:
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


def blame(url: str | None, digests: dict[str, str], recreate: str) -> None:
    """Raise the corrupt-shard error if the shard ``url`` that failed to parse or decode does
    not match its sha256 (a damaged shard is named as such, not as a bad sample)."""
    if url in digests and sha256(Path(url)) != digests[url]:
        raise _corrupt(url, recreate)


def verified_reader(paths: list[str], digests: dict[str, str], recreate: str, seed: int, shuffle_shards: bool,
                    shuffle_buffer: int | None):
    """The samples of ``paths``: shard order shuffled (seeded) unless not ``shuffle_shards``, then
    a seeded sample shuffle buffer if ``shuffle_buffer``; every shard verified while read.
    The same WebDataset pipeline (and so the same order) as before streaming verification,
    with the opener stage replaced by ``_open_verifying``."""

    def handler(exn: Exception) -> bool:
        blame(next((a for a in exn.args if isinstance(a, str) and a in digests), None), digests, recreate)
        return reraise_corrupt(exn, recreate)

    ds = wds.WebDataset(paths, shardshuffle=len(paths) if len(paths) > 1 and shuffle_shards else False, seed=seed,
                        nodesplitter=None, workersplitter=None, handler=handler, empty_check=False)
    (opener,) = [i for i, stage in enumerate(ds.pipeline) if isinstance(stage, wds.cache.StreamingOpen)]
    ds.pipeline[opener] = functools.partial(_open_verifying, digests=digests, recreate=recreate)
    ds.append(_count_parsed)  # before the shuffle buffer: every sample parsed from a tar
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, initial=shuffle_buffer, seed=seed)
    return ds


def check_counts(shard_dir: str | Path, manifest: dict, split: str, read: dict[str, int], all_paths: list[str]) -> None:
    """Fail unless each shard in ``read`` ({path: samples read}, every shard this process
    opened) gave the manifest's count. Manifests from before per-shard counts only allow
    the split's total, checked when this process read every shard of the split."""
    info = manifest["splits"][split]
    per_shard = info.get("shard_counts")
    if per_shard is not None:
        for path, n in read.items():
            want = per_shard.get(Path(path).name)
            if n != want:
                raise UserError(f"shard {path} gave {n} samples but {MANIFEST} says {want}; {recreate_hint(manifest)}")
    elif sorted(read) == sorted(all_paths) and sum(read.values()) != info["count"]:
        raise UserError(
            f"split {split!r} in {shard_dir} gave {sum(read.values())} samples "
            f"but {MANIFEST} says {info['count']}; {recreate_hint(manifest)}"
        )


def reraise_corrupt(exn: Exception, recreate: str) -> bool:
    raise UserError(f"cannot read shard data ({exn}); {recreate}") from exn
