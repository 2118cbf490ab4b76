"""All-or-nothing stage outputs.

A stage writes every output under a temporary sibling name (``<name>.tmp``) and the files
take their real names only when the whole stage succeeded, so a failure at any point
(training, featurizing, writing, a full disk) leaves the previous outputs or none -- never
an encoder without its metrics, or a metrics file from a run that crashed later.

    with StagedOutputs() as out:
        save_torch(obj, out.file("models/simclr/encoder.pt"))
        write_json(out.file("metrics/pretrain/simclr.json"), metrics)
    # both renamed into place here; on an exception, both temporaries are removed

Writers serialise in memory and write with Python's file API, so a full disk or a
read-only folder raises ``OSError`` (with the path), which ``pipeline.errors`` turns into
a one-line message. (``torch.save`` straight to a path reports a full disk as
"basic_ios::clear: iostream error".)
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import torch

TMP_SUFFIX = ".tmp"  # git-ignored (.gitignore: *.tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class StagedOutputs:
    """Temporary paths for a stage's outputs, renamed into place together on success."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def file(self, final: str | Path) -> Path:
        """A temporary path to write the output ``final`` to (parent folders created)."""
        return self._stage(Path(final), directory=False)

    def dir(self, final: str | Path) -> Path:
        """An empty temporary folder that becomes the output folder ``final``."""
        return self._stage(Path(final), directory=True)

    def _stage(self, final: Path, directory: bool) -> Path:
        if final.is_dir() and not directory:
            # caught here, before any work, rather than at the rename after hours of training
            raise IsADirectoryError(21, "output path is a folder, expected a file", str(final))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        _remove(tmp)  # a leftover of a killed run
        # created now: an unwritable folder fails before the stage's work, not after it
        tmp.mkdir() if directory else tmp.touch()
        self._pending.append((tmp, final))
        return tmp

    def commit(self) -> None:
        """Move every staged output to its final name (replacing what was there)."""
        for tmp, final in self._pending:
            _remove(final)
            os.replace(tmp, final)
        self._pending = []

    def discard(self) -> None:
        for tmp, _ in self._pending:
            _remove(tmp)
        self._pending = []

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (flushed to disk, so a full disk fails here, not later)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        if err.filename is None:  # write/flush errors carry no path: add it for the message
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_json(path: str | Path, obj: dict) -> None:
    """Sorted, indented JSON: the same dict always gives the same bytes."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` through memory: the bytes depend only on ``obj``, and I/O errors are
    ordinary ``OSError``s naming the path."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def replace_atomically(path: str | Path, write) -> None:
    """Write one file on its own (e.g. a resumable checkpoint during training) under a
    temporary name and rename it, so readers see the old or the new file, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_resumable(out: str, write) -> dict:
    """``write(folder)`` into ``<out>.tmp``, then renamed to ``out``: the shard folder appears
    whole (manifest included) or not at all. Unlike ``StagedOutputs`` the staging folder
    outlives a killed run (SIGKILL, out of memory, a pre-empted host, a power cut): the next
    run keeps the shards it finished (``pipeline.shards.write.Journal``: same inputs, same bytes) and writes
    the rest. An error or Ctrl-C removes it, as ``StagedOutputs`` does."""
    final = Path(out)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        manifest = write(tmp)
    except BaseException:  # an error or Ctrl-C: nothing half-written (only a killed process leaves shards to resume)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.is_dir():
        shutil.rmtree(final)
    elif final.exists():
        final.unlink()
    os.replace(tmp, final)
    return manifest
