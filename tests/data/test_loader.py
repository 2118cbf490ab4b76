"""DataLoader workers decode the pretraining batches: any worker count gives the batches of
the one-process path, in the same order, and a data error stays a one-line error."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from pipeline import dist
from pipeline.shards import verify
from pipeline.shards.read import stream_batches
from pipeline.data.loader import epoch_batches, loader_workers
from pipeline.errors import UserError

CPU = torch.device("cpu")


def _epoch(folder, workers, skip=0, batch=50):
    return list(epoch_batches(folder, "train", batch, 1000, seed=3, workers=workers, device=CPU, skip_batches=skip))


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on 2 cores: on purpose
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_give_the_one_process_batches_in_order(tiny_shards, workers):
    """400 images, batch 50: 8 batches, dealt 3-3-2 over 3 workers (uneven), and from a
    resume position (batch 3 on)."""
    whole = _epoch(tiny_shards, 0)
    assert len(whole) == 8 and _same(whole, list(stream_batches(tiny_shards, "train", 50, 1000, 3)))
    assert _same(_epoch(tiny_shards, workers), whole)
    assert _same(_epoch(tiny_shards, workers, skip=3), whole[3:])


def test_workers_serve_this_processes_rank(tiny_shards, monkeypatch):
    """The rank is taken in the training process (a worker has no process group)."""
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    monkeypatch.setattr(dist, "rank", lambda: 1)
    want = list(stream_batches(tiny_shards, "train", 50, 1000, 3, rank=1, world_size=2))
    assert len(want) == 4 and _same(_epoch(tiny_shards, 2), want)


def test_a_workers_data_error_is_the_one_line_error(tiny_shards, tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "_VERIFIED", set())
    copy = tmp_path / "shards"
    shutil.copytree(tiny_shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    name = sorted(manifest["splits"]["train"]["shard_counts"])[1]
    manifest["splits"]["train"]["shard_counts"][name] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError) as err:
        _epoch(copy, 2)
    assert str(err.value).startswith(f"shard {copy / name} gave 150 samples but manifest.json says 151") or \
        f"{name} gave 150 samples but manifest.json says 151" in str(err.value)
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)


def test_loader_workers_default_to_none_on_a_cpu(monkeypatch):
    """Unset, a CPU run decodes in the training process; a GPU run gets the cores available."""
    monkeypatch.setattr(dist, "default_workers", lambda requested: 6)
    assert loader_workers(None, CPU) == 0
    assert loader_workers(None, torch.device("cuda")) == 6
    assert loader_workers(3, CPU) == 3 and loader_workers(0, torch.device("cuda")) == 0
