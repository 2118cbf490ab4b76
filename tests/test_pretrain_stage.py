"""The pretrain stage through its CLI: bad checkpoints, divergence and unwritable outputs
stop it with a one-line message, exit status 2, and no new output of any kind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {"encoder": {"layers": [1, 1], "width": 8},
        "pretrain": {"epochs": 1, "batch_size": 64, "knn_bank_size": 100, "knn_query_size": 50}}


def _params(tmp_path: Path, **pretrain) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        raw[section].update(values)
    raw["pretrain"].update(pretrain)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _pretrain(tmp_path: Path, shards: Path, params: Path, metrics: str = "metrics/simclr.json") -> subprocess.CompletedProcess:
    args = ["--params", str(params), "--method", "simclr", "--shards", str(shards), "--out", "models/simclr",
            "--metrics", metrics, "--timing", "metrics/simclr.timing.json", "--live", "dvclive/simclr"]
    return subprocess.run([sys.executable, str(REPO / "stages" / "pretrain.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True)


def _outputs(tmp_path: Path) -> set[str]:
    return {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml"}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_checkpoint_is_refused_and_runs_nothing(tiny_shards, tmp_path):
    (tmp_path / "models" / "simclr").mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"fingerprint": "x", "module": _Payload(marker)}, tmp_path / "models" / "simclr" / "checkpoint.pt")
    res = _pretrain(tmp_path, tiny_shards, _params(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: models/simclr/checkpoint.pt is not a checkpoint this pipeline can resume")
    assert "rm models/simclr/checkpoint.pt" in res.stderr
    assert not marker.exists() and _outputs(tmp_path) == {"models/simclr/checkpoint.pt"}


def test_divergence_stops_the_run_with_no_output(tiny_shards, tmp_path):
    res = _pretrain(tmp_path, tiny_shards, _params(tmp_path, lr=1.0e12, warmup_epochs=0.0))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "training diverged" in res.stderr or "became non-finite" in res.stderr
    assert "lower the learning rate (pretrain.lr" in res.stderr
    assert _outputs(tmp_path) == set()  # no encoder, metrics, curves, nor a checkpoint of the diverged state


def test_metrics_path_that_is_a_folder_fails_before_training(tiny_shards, tmp_path):
    (tmp_path / "metrics" / "simclr.json").mkdir(parents=True)
    res = _pretrain(tmp_path, tiny_shards, _params(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: cannot write metrics/simclr.json: output path is a folder")
    assert _outputs(tmp_path) == set()


def test_batch_larger_than_the_split_names_the_key(tiny_shards, tmp_path):
    res = _pretrain(tmp_path, tiny_shards, _params(tmp_path, batch_size=4096))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith("error: pretrain.batch_size=4096 (x 1 processes) exceeds the 400 pretrain images")
    assert _outputs(tmp_path) == set()


@pytest.mark.parametrize("run", [0])
def test_a_good_run_writes_every_output_and_identical_weights_twice(tiny_shards, tmp_path, run):
    params = _params(tmp_path)
    first = _pretrain(tmp_path, tiny_shards, params)
    assert first.returncode == 0, first.stderr[-2000:]
    outputs = _outputs(tmp_path)
    assert {"models/simclr/encoder.pt", "models/simclr/checkpoint.pt", "models/simclr/provenance.json", "metrics/simclr.json",
            "metrics/simclr.timing.json"} <= outputs and not [o for o in outputs if o.endswith(".tmp")]
    encoder, metrics = (tmp_path / "models/simclr/encoder.pt").read_bytes(), (tmp_path / "metrics/simclr.json").read_text()
    assert "wall_seconds" not in metrics
    second = _pretrain(tmp_path, tiny_shards, params)  # the finished checkpoint is not resumed: trains again
    assert second.returncode == 0 and "resumed" not in second.stdout + second.stderr
    assert (tmp_path / "models/simclr/encoder.pt").read_bytes() == encoder
    assert (tmp_path / "metrics/simclr.json").read_text() == metrics
