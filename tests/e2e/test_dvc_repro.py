"""`dvc repro` end to end on a copy of the repository with tiny params (real images)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e

TINY = {
    "data": {"pretrain_size": 300, "train_size": 300, "val_size": 200, "test_size": 300, "shard_size": 200},
    "encoder": {"layers": [1, 1], "width": 8},
    "pretrain": {"epochs": 1, "batch_size": 64, "knn_bank_size": 200, "knn_query_size": 100},
    "finetune": {"epochs": 1, "batch_size": 64},
    "few_shot": {"shots": [1, 5], "queries": 5, "episodes": 30},
    "linear_eval": {"c_grid": [0.1, 1.0], "max_iter": 100, "sgd_epochs": 1, "sgd_batch_size": 64},
    "label_efficiency": {"fractions": [0.1, 1.0], "min_steps": 3},
    "diagnostics": {"images": 100},
}


def _env(cwd: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # stages run with this venv's python
    # the copy's own pipeline/, not the editable install's (the checkout): edits to the copy must count
    env["PYTHONPATH"] = str(cwd)
    return env


def _run(args: list[str], cwd: Path) -> str:
    res = subprocess.run(args, cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    assert res.returncode == 0, f"{args} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout + res.stderr


def _set(params_path: Path, updates: dict) -> None:
    params = yaml.safe_load(params_path.read_text())
    for section, values in updates.items():
        params[section].update(values)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("metrics/", "reports/", "dvclive/")) or f == "dvc.lock" or not (REPO / f).is_file():
            continue  # start with no results, as on a fresh clone without them
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)
    _set(dst / "params.yaml", TINY)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        _run(cmd, dst)
    return dst


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def test_repro_writes_every_metric_and_the_report(repo_copy):
    out = _run(["dvc", "repro"], repo_copy)
    assert _ran(out) == {"shard", "baselines", "pretrain@simclr", "linear-eval@simclr", "finetune@simclr",
                         "few-shot@simclr", "transfer@simclr", "label-efficiency@simclr", "diagnostics@simclr", "report"}
    metrics = {p.relative_to(repo_copy / "metrics").as_posix(): json.loads(p.read_text()) for p in (repo_copy / "metrics").rglob("*.json")}
    assert set(metrics) == {"baselines.json", "pretrain/simclr.json", "pretrain/simclr.timing.json", "linear-eval/simclr.json", "finetune/simclr.json",
                            "few-shot/simclr.json", "transfer/simclr.json", "label-efficiency/simclr.json", "diagnostics/simclr.json"}
    lin = metrics["linear-eval/simclr.json"]
    assert 0.1 < lin["linear"]["top1"] <= 1 and 0.1 < lin["knn20_top1"] <= 1
    assert 0 < lin["linear_sgd"]["top1"] <= 1 and 0 < lin["random_init"]["linear"]["top1"] <= 1
    fs = metrics["few-shot/simclr.json"]
    assert set(fs) == {"prototype", "logreg"} and set(fs["logreg"]) == {"5way_1shot", "5way_5shot", "10way_1shot", "10way_5shot"}
    le = metrics["label-efficiency/simclr.json"]
    assert set(le) == {"0.1", "1.0"} and all(0 <= le[f][arm] <= 1 for f in le for arm in ("supervised", "linear", "finetune"))
    assert metrics["diagnostics/simclr.json"]["effective_rank"] > 1
    assert set(metrics["transfer/simclr.json"]) == {"digits", "mnist-sample"}
    assert set(metrics["baselines.json"]) == {"raw_pixels", "random_init", "supervised_scratch"}
    report = (repo_copy / "reports" / "report.md").read_text()
    for needle in ("| simclr |", "| raw pixels (baseline) |", "| random init (baseline) |", "linear top-1", "transfer digits",
                   "Label efficiency", "Representation diagnostics", "logreg"):
        assert needle in report
    for fig in ("training_curves.png", "method_by_metric.png", "few_shot.png", "label_efficiency.png", "embedding_map.png"):
        assert (repo_copy / "reports" / "figures" / fig).stat().st_size > 1000
    assert (repo_copy / "models" / "simclr" / "encoder.pt").is_file()
    loss_tsv = repo_copy / "dvclive" / "pretrain" / "simclr" / "plots" / "metrics" / "loss.tsv"
    assert loss_tsv.read_text().startswith("step\tloss")
    shown = _run(["dvc", "metrics", "show", "--json"], repo_copy)
    assert "linear" in shown and "knn20_top1" in shown and "wall_seconds" not in shown  # wall times are not metrics
    assert json.loads((repo_copy / "metrics" / "pretrain" / "simclr.timing.json").read_text())["wall_seconds"] > 0


def test_second_repro_runs_nothing(repo_copy):
    out = _run(["dvc", "repro"], repo_copy)
    assert _ran(out) == set(), out


def test_a_loss_change_retrains_from_scratch(repo_copy):
    """The finished checkpoint persists between runs (``persist: true``), but it is never
    taken as the result of a run with other code: the weights change with the loss."""
    encoder = repo_copy / "models" / "simclr" / "encoder.pt"
    before = encoder.read_bytes()
    loss = repo_copy / "pipeline" / "methods" / "simclr.py"
    original = loss.read_text()
    loss.write_text(original.replace("logits = z @ z_all.T / temperature", "logits = z @ z_all.T / (2 * temperature)"))
    try:
        out = _run(["dvc", "repro", "pretrain@simclr"], repo_copy)
        assert "pretrain@simclr" in _ran(out) and "resumed" not in out
        assert encoder.read_bytes() != before
    finally:
        loss.write_text(original)
    # the old code again, trained anew (not restored from DVC's run cache): the same bytes as the first run
    out = _run(["dvc", "repro", "--no-run-cache", "pretrain@simclr"], repo_copy)
    assert "resumed" not in out and encoder.read_bytes() == before


def test_pretrain_param_change_reruns_downstream_not_shard(repo_copy):
    _set(repo_copy / "params.yaml", {"pretrain": {"lr": 0.3}})
    out = _run(["dvc", "repro"], repo_copy)
    ran = _ran(out)
    assert "shard" not in ran and "baselines" not in ran
    assert {"pretrain@simclr", "linear-eval@simclr", "finetune@simclr", "few-shot@simclr", "transfer@simclr",
            "label-efficiency@simclr", "diagnostics@simclr", "report"} <= ran
    diff = _run(["dvc", "params", "diff", "--md"], repo_copy)
    assert "pretrain.lr" in diff


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _plot_rows(node) -> list[dict]:
    """The data rows inside `dvc plots show --json` output (wherever the renderer put them)."""
    if isinstance(node, list):
        if node and all(isinstance(x, dict) and "step" in x for x in node):
            return node
        return [r for x in node for r in _plot_rows(x)]
    if isinstance(node, dict):
        return [r for x in node.values() for r in _plot_rows(x)]
    return []


def test_a_fresh_clone_pulls_from_a_remote_and_runs_nothing(repo_copy, tmp_path):
    """Shards, encoder and checkpoint go to a DVC remote (here a local folder); a fresh git clone
    pulls them and is up to date: no stage runs, a forced evaluation gives the committed metrics,
    and the training curves (git-tracked, like the metrics) can be plotted."""
    git_commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm"]
    _run(["git", "add", "-A"], repo_copy)
    _run([*git_commit, "results"], repo_copy)
    remote = tmp_path / "remote"
    _run(["dvc", "remote", "add", "-d", "local", str(remote)], repo_copy)
    _run(["git", "add", ".dvc/config"], repo_copy)
    _run([*git_commit, "remote"], repo_copy)
    assert _run(["git", "status", "--porcelain"], repo_copy).strip() == ""  # all results are in git or in DVC
    _run(["dvc", "push"], repo_copy)
    assert any(p.is_file() for p in remote.rglob("*"))

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(repo_copy), str(clone)], tmp_path)
    for path in ("data", "models"):
        assert not (clone / path).exists()  # not in git: only the remote has them
    assert (clone / "dvclive" / "pretrain" / "simclr" / "plots" / "metrics" / "loss.tsv").is_file()  # in git
    _run(["dvc", "pull"], clone)
    for rel in ("models/simclr/encoder.pt", "models/simclr/checkpoint.pt", "models/simclr/provenance.json"):
        assert (clone / rel).read_bytes() == (repo_copy / rel).read_bytes(), rel
    assert (clone / "data" / "shards" / "manifest.json").is_file()
    assert _tree(clone / "data" / "shards") == _tree(repo_copy / "data" / "shards")

    status = _run(["dvc", "status"], clone)
    assert "Data and pipelines are up to date" in status, status
    out = _run(["dvc", "repro"], clone)
    assert _ran(out) == set(), out

    plots = json.loads(_run(["dvc", "plots", "show", "--json"], clone))
    assert not plots.get("errors"), plots.get("errors")
    loss_plot = "dvclive/pretrain/simclr/plots/metrics/loss.tsv"
    assert loss_plot in plots["data"], sorted(plots["data"])
    rows = _plot_rows(plots["data"][loss_plot])
    tsv_rows = (clone / loss_plot).read_text().strip().splitlines()[1:]
    assert rows and {float(r["loss"]) for r in rows} == {float(line.split("\t")[1]) for line in tsv_rows}

    metrics = clone / "metrics" / "linear-eval" / "simclr.json"
    committed = metrics.read_bytes()
    out = _run(["dvc", "repro", "-f", "-s", "linear-eval@simclr"], clone)
    assert _ran(out) == {"linear-eval@simclr"}, out
    assert json.loads(metrics.read_bytes()) == json.loads(committed)  # the stage is deterministic
    assert metrics.read_bytes() == committed
