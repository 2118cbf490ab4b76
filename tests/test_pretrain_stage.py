"""The pretrain stage through its CLI: bad checkpoints, divergence and unwritable outputs
stop it with a one-line message, exit status 2, and no new output of any kind."""

from __future__ import annotations

import json
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


def test_two_processes_under_torchrun(tiny_shards, tmp_path):
    """`pretrain.nproc_per_node: 2` on a CPU: the stage starts itself under torchrun (gloo,
    no SyncBatchNorm), both ranks train, rank 0 alone writes, and what it wrote loads: the
    encoder, and a checkpoint holding each rank's own RNG state."""
    from pipeline.modalities.encoders import load_encoder

    res = _pretrain(tmp_path, tiny_shards, _params(tmp_path, nproc_per_node=2, epochs=2))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node=2" in res.stdout
    assert "done: 2 epochs" in res.stderr and "2 processes" in res.stderr
    outputs = _outputs(tmp_path)
    assert {"models/simclr/encoder.pt", "models/simclr/checkpoint.pt", "models/simclr/provenance.json", "metrics/simclr.json",
            "metrics/simclr.timing.json", "dvclive/simclr/plots/metrics/loss.tsv"} <= outputs
    assert not [o for o in outputs if o.endswith(".tmp")]
    assert json.loads((tmp_path / "models/simclr/provenance.json").read_text())["world_size"] == 2
    load_encoder(tmp_path / "models/simclr/encoder.pt")
    state = torch.load(tmp_path / "models/simclr/checkpoint.pt", weights_only=True)
    assert state["world_size"] == 2 and state["finished"] and state["epoch"] == 1
    views = [r["extra"]["views"]["gen"] for r in state["ranks"]]
    assert len(views) == 2 and not torch.equal(views[0], views[1])  # each rank's own generator
    # 400 images, batch 64 per rank: 3 steps an epoch on each rank; x axis = the real step
    assert (tmp_path / "dvclive/simclr/plots/metrics/loss.tsv").read_text().split("\n")[1].startswith("3\t")


def test_live_curves_are_written_during_training_and_resume(tiny_shards, tmp_path):
    """The curves are at the real step; a run stopped during epoch 3 and resumed from epoch
    2's checkpoint continues them (DVCLive resume) to the curves of an uninterrupted run,
    with no point twice."""
    params = _params(tmp_path, epochs=3)
    straight = _pretrain(tmp_path, tiny_shards, params)
    assert straight.returncode == 0, straight.stderr[-2000:]
    loss = tmp_path / "dvclive/simclr/plots/metrics/loss.tsv"
    want = loss.read_text()
    assert [line.split("\t")[0] for line in want.splitlines()] == ["step", "6", "12", "18"]  # 400 // 64 = 6 steps an epoch
    # the same run killed during epoch 3: its checkpoint is epoch 2's, its curves have 2 points
    ckpt = tmp_path / "models/simclr/checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state.update(finished=False, epoch=1, history=state["history"][:2])
    torch.save(state, ckpt)
    loss.write_text("\n".join(want.splitlines()[:4]) + "\n")  # and a point past the checkpoint, logged before the kill
    resumed = _pretrain(tmp_path, tiny_shards, params)
    assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr[-2000:]
    assert [line.split("\t")[0] for line in loss.read_text().splitlines()] == ["step", "6", "12", "18"]
    # the curves folder deleted before the restart: the checkpoint's history draws epochs 1-2
    torch.save(state, ckpt)
    import shutil

    shutil.rmtree(tmp_path / "dvclive/simclr")
    again = _pretrain(tmp_path, tiny_shards, params)
    assert again.returncode == 0 and "resumed" in again.stdout, again.stderr[-2000:]
    rows = [line.split("\t") for line in loss.read_text().splitlines()]
    assert [r[0] for r in rows] == ["step", "6", "12", "18"]
    assert [r[1] for r in rows[1:3]] == [line.split("\t")[1] for line in want.splitlines()[1:3]]


def test_live_curves_grow_while_fit_runs(tmp_path):
    """Each epoch's point is on disk when the next epoch starts, not replayed at the end."""
    from pipeline.config import OptimParams
    from pipeline.train.live import LiveCurves
    from pipeline.train.loop import TrainJob, fit

    curves = LiveCurves(tmp_path / "live", steps_per_epoch=2)
    seen = []

    def batches(epoch):
        tsv = tmp_path / "live/plots/metrics/loss.tsv"
        seen.append(tsv.read_text().splitlines()[1:] if tsv.exists() else [])
        return [(torch.ones(4, 2),)] * 2

    model = torch.nn.Linear(2, 1)
    job = TrainJob(module=_Loss(model), param_groups=[{"params": list(model.parameters())}], batches=batches,
                   steps_per_epoch=2, optim=OptimParams(epochs=3, batch_size=4, lr=0.1), on_epoch_logged=curves.log)
    fit(job, torch.device("cpu"))
    curves.close()
    assert [[row.split("\t")[0] for row in rows] for rows in seen] == [[], ["2"], ["2", "4"]]


class _Loss(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.lin = lin

    def forward(self, x):
        return {"loss": self.lin(x).square().mean()}


def test_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tiny_shards, tmp_path):
    """SIGKILL once a checkpoint inside an epoch exists (`pretrain.checkpoint_every_steps`);
    the restarted stage resumes from it (data position, every RNG) and writes the encoder
    an uninterrupted run writes, byte for byte."""
    import signal
    import time

    (tmp_path / "straight").mkdir()
    (tmp_path / "killed").mkdir()
    settings = {"epochs": 2, "checkpoint_every_steps": 2}  # 6 steps an epoch: checkpoints at 2, 4, 8, 10 (+ epoch ends)
    straight = _pretrain(tmp_path / "straight", tiny_shards, _params(tmp_path / "straight", **settings))
    assert straight.returncode == 0, straight.stderr[-2000:]
    params = _params(tmp_path / "killed", **settings)
    args = ["--params", str(params), "--method", "simclr", "--shards", str(tiny_shards), "--out", "models/simclr",
            "--metrics", "metrics/simclr.json", "--timing", "metrics/simclr.timing.json", "--live", "dvclive/simclr"]
    ckpt = tmp_path / "killed/models/simclr/checkpoint.pt"
    proc = subprocess.Popen([sys.executable, str(REPO / "stages" / "pretrain.py"), *args], cwd=tmp_path / "killed",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, partial = time.time() + 60, None
    while time.time() < deadline and proc.poll() is None:
        try:  # written atomically (rename): a load sees an old or a new checkpoint, never half of one
            state = torch.load(ckpt, weights_only=True) if ckpt.exists() else {}
        except Exception:  # noqa: BLE001 - replaced between exists() and the read
            state = {}
        if state.get("steps_in_epoch") and state["epoch"] == 0:  # inside epoch 2
            partial = state["steps_in_epoch"]
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert partial is not None, "the run ended before a checkpoint inside epoch 2 was seen"
    resumed = _pretrain(tmp_path / "killed", tiny_shards, params)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"after epoch 1 and {partial} steps of epoch 2" in resumed.stdout
    for name in ("models/simclr/encoder.pt", "metrics/simclr.json"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


@pytest.mark.parametrize("settings, message", [
    ({"nproc_per_node": 2, "sync_batchnorm": True}, "error: pretrain.sync_batchnorm: true needs CUDA"),
    ({"nproc_per_node": 4, "batch_size": 128}, "error: pretrain.batch_size=128 (x 4 processes) exceeds the 400 pretrain images"),
])
def test_bad_multi_process_params_fail_before_any_process_starts(tiny_shards, tmp_path, settings, message):
    if settings.get("sync_batchnorm") and torch.cuda.is_available():
        pytest.skip("SyncBatchNorm runs here")
    res = _pretrain(tmp_path, tiny_shards, _params(tmp_path, **settings))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "torch.distributed.run" not in res.stdout, res.stderr
    assert res.stderr.startswith(message) and len(res.stderr.strip().splitlines()) == 1
    assert _outputs(tmp_path) == set()
