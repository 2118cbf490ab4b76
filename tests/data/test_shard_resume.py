"""A shard stage that resumes: killed (SIGKILL) about half way and restarted, it keeps the
shards it finished and writes only the rest, ending byte-identical to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.shards import pool
from pipeline.modalities.image.codec import write_image_shards
from pipeline.shards.write import Journal
from pipeline.modalities.image.sources import ImageSet
from stages import shard as shard_stage
from tests.data.test_shard_streaming import _files, _mixed_folder

REPO = Path(__file__).resolve().parents[2]

# The real stage, each encoding task slowed down so the test can kill it part way (one
# worker: the tasks run in the stage's own process, where the patch applies).
_SLOW_STAGE = """
import runpy, sys, time
import pipeline.shards.pool as s
real = s.encode_chunk
s.encode_chunk = lambda *a: (time.sleep(0.15), real(*a))[1]
sys.argv = ["stages/shard.py", *sys.argv[1:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _params(tmp_path: Path, folder: Path) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(folder), pretrain_size=None, train_size=None, val_size=3,
                       test_fraction=0.3, shard_size=3, image_size=16, channels=3, workers=1)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _killed_stage(params: Path, out: Path, n_done: int) -> None:
    """The real stage in its own process, SIGKILLed once ``n_done`` shards are finished."""
    journal = out.with_name(out.name + ".tmp") / Journal.NAME
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_STAGE, "--params", str(params), "--out", str(out)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (journal.is_file() and len(journal.read_text().splitlines()) - 1 >= n_done):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _stage(monkeypatch, params: Path, out: Path) -> None:
    """The stage's main() in this process (saves a Python start; the kill needs its own process)."""
    monkeypatch.setattr(sys, "argv", ["shard.py", "--params", str(params), "--out", str(out)])
    shard_stage.main()


def test_killed_stage_resumes_byte_identical(tmp_path, monkeypatch):
    folder = _mixed_folder(tmp_path / "imgs")  # 27 images in 3-sample shards
    params = _params(tmp_path, folder)
    whole = tmp_path / "whole"
    _stage(monkeypatch, params, whole)
    n_shards = len(list(whole.glob("*.tar")))

    out = tmp_path / "resumed"
    staging = out.with_name("resumed.tmp")
    _killed_stage(params, out, n_shards // 2)
    kept = {p.name: p.stat().st_mtime_ns for p in staging.glob("*.tar")}
    done = len((staging / Journal.NAME).read_text().splitlines()) - 1
    assert n_shards // 2 <= done < n_shards and not out.exists()

    _stage(monkeypatch, params, out)
    assert _files(out) == _files(whole)
    assert not staging.exists() and not (out / Journal.NAME).exists()
    # the shards the killed run finished were kept, not written again
    assert sum((out / n).stat().st_mtime_ns == t for n, t in kept.items()) >= done


def _tiny_splits(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    make = lambda n: ImageSet(rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), np.arange(n) % 2, ["a", "b"])  # noqa: E731
    return {"pretrain": make(12), "train": make(12), "val": make(4), "test": make(4)}


def _interrupted(splits: dict, out: Path, monkeypatch, after: int) -> None:
    """A run that dies while encoding the shard after ``after`` finished ones (one task per shard here)."""
    real, calls = pool.encode_chunk, []

    def encode(*args):
        calls.append(1)
        if len(calls) > after:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(pool, "encode_chunk", encode)
    with pytest.raises(RuntimeError, match="killed"):
        write_image_shards(splits, out, 4, source={}, resume=True)
    monkeypatch.setattr(pool, "encode_chunk", real)


def test_resume_keeps_only_matching_verified_shards(tmp_path, monkeypatch):
    """A kept shard must be this run's: a damaged one, or one from other inputs, is rewritten."""
    splits, out = _tiny_splits(), tmp_path / "out"
    want = write_image_shards(splits, tmp_path / "want", 4, source={})
    _interrupted(splits, out, monkeypatch, after=5)  # pretrain 0-2 and train 0-1 finished
    assert len((out / Journal.NAME).read_text().splitlines()) == 1 + 5 and not (out / "manifest.json").exists()
    (out / "train-000001.tar").write_bytes(b"damaged")
    encoded = []
    real = pool.encode_chunk
    monkeypatch.setattr(pool, "encode_chunk", lambda r, i, *a: encoded.append(len(i)) or real(r, i, *a))
    got = write_image_shards(splits, out, 4, source={}, resume=True)
    assert got == want and _files(out) == _files(tmp_path / "want")  # pixel stats from the journal: same manifest
    assert encoded == [4, 4, 4, 4]  # train-000001 (damaged), train-000002, val, test

    _interrupted(splits, out, monkeypatch, after=5)
    encoded.clear()
    monkeypatch.setattr(pool, "encode_chunk", lambda r, i, *a: encoded.append(len(i)) or real(r, i, *a))
    write_image_shards(_tiny_splits(seed=1), out, 4, source={}, resume=True)  # other inputs: nothing kept
    assert sum(encoded) == 32
