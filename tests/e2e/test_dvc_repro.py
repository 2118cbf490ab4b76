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
    "label_efficiency": {"fractions": [0.1], "min_steps": 3},
    "diagnostics": {"images": 100},
}
# the text pipeline (presets/text.yaml merged over the tiny params.yaml): 10 fortune categories
TINY_TEXT = {
    # the whole stratified test split (5%)
    "data": {"pretrain_size": 600, "train_size": 500, "val_size": 300, "test_size": None, "test_fraction": 0.05, "shard_size": 250},
    "text": {"vocab_size": 400, "max_length": 32, "min_class_count": 600, "transfer_per_language": 60, "tfidf_max_features": 2000},
    "encoder": {"dim": 32, "depth": 1, "heads": 2},
    "pretrain": {"epochs": 1, "batch_size": 32, "knn_bank_size": 200, "knn_query_size": 100, "prepare_images": 100},
    "finetune": {"epochs": 1, "batch_size": 32},
    "label_efficiency": {"fractions": [0.1], "finetune": {"epochs": 1, "batch_size": 32}},
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
        params.setdefault(section, {}).update(values)
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if f.startswith(("metrics/", "reports/", "dvclive/", "text/")) or f == "dvc.lock" or not (REPO / f).is_file():
            continue  # start with no results, as on a fresh clone without them
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dst / f)
    _set(dst / "params.yaml", TINY)
    _set(dst / "presets" / "text.yaml", TINY_TEXT)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"]):
        _run(cmd, dst)
    return dst


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


PROTOCOLS = ("linear_eval", "knn", "finetune", "few_shot", "transfer", "label_efficiency", "diagnostics")
BASELINES = ("raw_pixels", "random_init")
TEXT_METHODS = ("mlm", "clm")
TEXT_BASELINES = ("tfidf", "random_init", "random_init_clm")
TEXT_STAGES = ({"text-shard", "text-report"} | {f"text-pretrain@{m}" for m in TEXT_METHODS}
               | {f"text-evaluate@{m}-{p}" for m in TEXT_METHODS for p in PROTOCOLS}
               | {f"text-baseline@{b}-{p}" for b in TEXT_BASELINES for p in PROTOCOLS})


def test_params_run_every_registered_protocol():
    from pipeline.registry import PROTOCOLS as REGISTERED

    assert tuple(yaml.safe_load((REPO / "params.yaml").read_text())["protocols"]) == PROTOCOLS
    assert sorted(REGISTERED.names()) == sorted(PROTOCOLS)


def test_repro_writes_every_metric_and_the_report(repo_copy):
    out = _run(["dvc", "repro"], repo_copy)
    assert _ran(out) == ({"shard", "pretrain@simclr", "report"} | {f"evaluate@simclr-{p}" for p in PROTOCOLS}
                         | {f"baseline@{b}-{p}" for b in BASELINES for p in PROTOCOLS} | TEXT_STAGES)
    metrics = {p.relative_to(repo_copy / "metrics").as_posix(): json.loads(p.read_text()) for p in (repo_copy / "metrics").rglob("*.json")}
    expected = {"pretrain/simclr.json", "pretrain/simclr.timing.json"}
    for p in PROTOCOLS:
        for name in ("simclr", *BASELINES):
            expected |= {f"{p}/{name}.json", f"{p}/{name}.details.json", f"{p}/{name}.predictions.json"}
    assert set(metrics) == expected
    preds = metrics["linear_eval/simclr.predictions.json"]  # per-example test predictions for the review
    assert set(preds["predictions"]) == {"linear_top1", "linear_sgd_top1"} and len(preds["labels"]) == 300
    assert metrics["few_shot/simclr.predictions.json"] == {}  # no per-example classes
    lin, knn = metrics["linear_eval/simclr.json"], metrics["knn/simclr.json"]
    assert set(lin) == {"linear_top1", "linear_sgd_top1"} and set(knn) == {"knn20_top1", "knn200_top1"}
    assert 0.2 < lin["linear_top1"] <= 1 and 0.2 < knn["knn20_top1"] <= 1  # chance 0.1
    assert metrics["linear_eval/simclr.details.json"]["result"]["linear"]["best_c"] in (0.1, 1.0)
    fs = metrics["few_shot/simclr.details.json"]["result"]
    assert set(fs) == {"prototype", "logreg"}
    assert set(fs["logreg"]) == {"5way_1shot", "5way_5shot", "10way_1shot", "10way_5shot"}
    assert set(metrics["few_shot/simclr.json"]) == {"prototype_5way_1shot", "prototype_5way_1shot_ci95",
                                                    "prototype_5way_5shot", "prototype_5way_5shot_ci95"}
    assert set(metrics["label_efficiency/simclr.json"]) == {"linear_0.1", "finetune_0.1"}
    assert set(metrics["label_efficiency/random_init.json"]) == {"linear_0.1", "finetune_0.1"}  # finetune: supervised
    assert set(metrics["label_efficiency/raw_pixels.json"]) == {"linear_0.1"}
    assert metrics["finetune/raw_pixels.json"] == {} and "not_applicable" in metrics["finetune/raw_pixels.details.json"]
    assert metrics["finetune/random_init.details.json"]["result"]["encoder_lr_mult"] == 1.0  # supervised from scratch
    assert metrics["diagnostics/simclr.json"]["effective_rank"] > 1
    assert set(metrics["transfer/simclr.json"]) == {"digits_top1", "mnist-sample_top1"}
    report = (repo_copy / "reports" / "report.md").read_text()
    for needle in ("| simclr |", "| raw pixels (baseline) |", "| random init (baseline) |", "linear top-1", "transfer digits",
                   "Label efficiency", "Representation diagnostics", "logreg"):
        assert needle in report
    for fig in ("training_curves.png", "method_by_metric.png", "few_shot.png", "label_efficiency.png", "embedding_map.png"):
        assert (repo_copy / "reports" / "figures" / fig).stat().st_size > 1000
    assert (repo_copy / "models" / "simclr" / "encoder.pt").is_file()
    loss_tsv = repo_copy / "dvclive" / "pretrain" / "simclr" / "plots" / "metrics" / "loss.tsv"
    assert loss_tsv.is_file()
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo_copy))
    shown_text = json.dumps(shown)
    assert "linear_top1" in shown_text and "wall_seconds" not in shown_text and "best_c" not in shown_text  # headlines only
    assert json.loads((repo_copy / "metrics" / "pretrain" / "simclr.timing.json").read_text())["wall_seconds"] > 0


def test_repro_runs_the_text_pipeline_beside_the_images(repo_copy):
    """The same stages on fortunes (`--preset text`): every protocol on MLM, CLM and the
    baselines, the methods' own held-out measures, a text report, and `dvc metrics show`
    listing the text metrics beside the image ones."""
    root = repo_copy / "text" / "metrics"
    metrics = {p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.rglob("*.json")}
    for p in PROTOCOLS:
        for name in (*TEXT_METHODS, *TEXT_BASELINES):
            assert f"{p}/{name}.json" in metrics and f"{p}/{name}.details.json" in metrics
    chance = 1 / len(json.loads((repo_copy / "text" / "data" / "shards" / "manifest.json").read_text())["classes"])
    for name in (*TEXT_METHODS, "tfidf"):
        assert chance < metrics[f"linear_eval/{name}.json"]["linear_top1"] <= 1
    assert metrics["finetune/tfidf.json"] == {} and "not_applicable" in metrics["finetune/tfidf.details.json"]
    assert set(metrics["transfer/mlm.json"]) == {"fortunes-language_top1"}
    mlm, clm = metrics["pretrain/mlm.json"], metrics["pretrain/clm.json"]
    assert 0 < mlm["masked_accuracy"] <= 1 and mlm["perplexity"] > 1
    assert 1 < clm["perplexity"] and 1 < clm["unigram_perplexity"]
    assert (repo_copy / "text" / "data" / "shards" / "tokenizer.json").is_file()
    report = (repo_copy / "reports" / "text" / "report.md").read_text()
    for needle in ("| mlm |", "| clm |", "TF-IDF (baseline)", "transfer fortunes-language", "perplexity"):
        assert needle in report
    shown = json.dumps(json.loads(_run(["dvc", "metrics", "show", "--json"], repo_copy)))
    assert "text/metrics/linear_eval/mlm.json" in shown and "metrics/linear_eval/simclr.json" in shown


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
    assert "shard" not in ran and not any(r.startswith(("baseline@", "text-shard", "text-baseline@")) for r in ran)
    # text-pretrain also tracks params.yaml's pretrain section (the text preset overrides lr, not every key)
    assert {"pretrain@simclr", "report"} | {f"evaluate@simclr-{p}" for p in PROTOCOLS} == {r for r in ran if not r.startswith("text-")}
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

    metrics = clone / "metrics" / "linear_eval" / "simclr.json"
    committed = metrics.read_bytes()
    out = _run(["dvc", "repro", "-f", "-s", "evaluate@simclr-linear_eval"], clone)
    assert _ran(out) == {"evaluate@simclr-linear_eval"}, out
    assert json.loads(metrics.read_bytes()) == json.loads(committed)  # the stage is deterministic
    assert metrics.read_bytes() == committed


TOY_METHOD = '''"""A toy method for the extension test: predict whether an image was flipped upside down."""

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline.config import Strict
from pipeline.modalities.image.views import to_float
from pipeline.methods._base import Method
from pipeline.registry import METHODS


@METHODS.register
class UpsideDown(Method):
    name = "upside_down"

    class Params(Strict):
        hidden_dim: int = Field(16, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.head = torch.nn.Linear(encoder.feature_dim, 2)

    def training_step(self, images):
        x = to_float(images)
        x = torch.cat([x, x.flip(2)])
        labels = torch.arange(2, device=x.device).repeat_interleave(len(images))
        return {"loss": F.cross_entropy(self.head(self.encoder(x)), labels)}
'''

TOY_PROTOCOL = '''"""A toy protocol for the extension test: nearest class mean on frozen features."""

import numpy as np
from pydantic import Field

from pipeline import config
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.eval.protocol import EvalContext, Protocol, register


@register
class NearestMean(Protocol):
    name = "nearest_mean"
    order = 100

    class Params(Strict):
        normalise: bool = Field(True)

    def check(self, params: config.Params, manifest: dict) -> None:
        empty = [c for c, n in manifest["splits"]["train"]["per_class"].items() if n == 0]
        if empty:
            raise UserError(f"nearest_mean: the train split has no images of {empty}, so no class mean")

    def run(self, ctx: EvalContext) -> dict:
        (xtr, ytr), (xte, yte) = ctx.features("train"), ctx.features("test")
        if ctx.params.protocol_params[self.name].normalise:
            xtr, xte = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (xtr, xte))
        means = np.stack([xtr[ytr == c].mean(0) for c in range(ctx.num_classes)])
        pred = np.argmin(((xte[:, None] - means[None]) ** 2).sum(-1), axis=1)
        return {"top1": float((pred == yte).mean())}

    def headline(self, result: dict) -> dict:
        return {"top1": result["top1"]}

    def summary(self, result: dict) -> dict:
        return {"nearest mean top-1": result["top1"]}
'''


TOY_SOURCE = '''"""Data source ``stripes`` (a toy for the extension test): synthetic 28x28 grey images of four
classes, stripes of a class-specific orientation and period at a random phase, with noise;
deterministic from ``seed``. 1000 train and 400 test images."""

from __future__ import annotations

import numpy as np

from pipeline.modalities.base import register_source
from pipeline.modalities.image.sources import ArrayReader, SampleRefs

CLASSES = ["horizontal", "vertical", "diagonal", "anti-diagonal"]
ANGLES = [90.0, 0.0, 45.0, 135.0]  # direction the brightness varies in, degrees from the x axis
PERIODS = [7.0, 7.0, 4.0, 4.0]  # pixels


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[N, 28, 28, 1]``: the stripes of each label, random phase, Gaussian noise."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float64)
    theta = np.deg2rad(np.array(ANGLES)[labels])[:, None, None]
    period = np.array(PERIODS)[labels][:, None, None]
    phase = rng.uniform(0, 2 * np.pi, len(labels))[:, None, None]
    wave = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    pixels = 128 + 90 * wave + rng.normal(0, 25, wave.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)[..., None]


def _refs(n: int, rng: np.random.Generator) -> SampleRefs:
    labels = np.arange(n) % len(CLASSES)
    rng.shuffle(labels)
    return SampleRefs(ArrayReader(_images(labels, rng)), np.arange(n), labels.astype(np.int64), list(CLASSES))


@register_source("stripes", "image")
def load(params) -> tuple[SampleRefs, SampleRefs]:
    """``(train, test)`` references: 1000 and 400 images, balanced."""
    rng = np.random.default_rng(params.seed)
    return _refs(1000, rng), _refs(400, rng)
'''


def test_a_new_method_and_protocol_are_one_module_and_one_params_section_each(repo_copy, tmp_path):
    """Adding a method, a protocol and a data source touches no other file: the registries find
    the modules, dvc.yaml's matrices take the names from params.yaml, the report takes the columns."""
    toy = tmp_path / "toy"
    results = {"metrics", "reports", "dvclive", "models", "dvc.lock", ".dvc"}  # at the top level only
    shutil.copytree(repo_copy, toy, ignore=lambda d, names: [n for n in names if Path(d) == repo_copy and n in results])
    shutil.copytree(repo_copy / ".dvc", toy / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    (toy / "pipeline" / "methods" / "upside_down.py").write_text(TOY_METHOD)
    (toy / "pipeline" / "eval" / "protocols" / "nearest_mean.py").write_text(TOY_PROTOCOL)
    (toy / "pipeline" / "modalities" / "image" / "datasets" / "stripes.py").write_text(TOY_SOURCE)
    params = yaml.safe_load((toy / "params.yaml").read_text())
    params.update(methods=["upside_down"], protocols=["nearest_mean", "linear_eval"], baselines=["raw_pixels"])
    params["upside_down"] = {"hidden_dim": 8}
    params["nearest_mean"] = {"normalise": True}
    params["data"]["source"] = "stripes"
    (toy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = [line for line in _run(["git", "status", "--porcelain"], toy).split("\n") if line.strip()]
    changed = [line for line in changed if not line.startswith(" D")]  # results left out of the copy
    assert sorted(line[3:] for line in changed) == sorted(
        ["params.yaml", "pipeline/eval/protocols/nearest_mean.py", "pipeline/methods/upside_down.py",
         "pipeline/modalities/image/datasets/stripes.py"])
    out = _run(["dvc", "repro", "report"], toy)  # the image pipeline (text-* would run the text preset's methods)
    assert {"shard", "pretrain@upside_down", "evaluate@upside_down-nearest_mean", "baseline@raw_pixels-nearest_mean",
            "evaluate@upside_down-linear_eval", "report"} <= _ran(out)
    manifest = json.loads((toy / "data" / "shards" / "manifest.json").read_text())
    assert manifest["classes"] == ["horizontal", "vertical", "diagonal", "anti-diagonal"], manifest["classes"]
    top1 = json.loads((toy / "metrics" / "nearest_mean" / "upside_down.json").read_text())["top1"]
    assert 0.5 < top1 <= 1, f"nearest_mean top-1 {top1} on the toy source (chance 0.25)"
    assert "nearest mean top-1" in (toy / "reports" / "report.md").read_text()


def test_dvc_repro_after_a_sigkill_mid_epoch_ends_with_the_uninterrupted_weights(repo_copy):
    """`pretrain.checkpoint_every_steps`: `dvc repro` killed with SIGKILL (dvc and its stage)
    inside epoch 2, then `dvc repro` again: the stage resumes from the checkpoint (kept:
    `persist: true`) at its step and writes the encoder of an uninterrupted run, byte for byte."""
    import signal
    import time

    import torch

    # 300 // 32 = 9 steps an epoch: a few milliseconds each on a fast CPU, so the kill lands some steps in
    _set(repo_copy / "params.yaml", {"pretrain": {"epochs": 2, "checkpoint_every_steps": 1, "batch_size": 32}})
    _run(["dvc", "repro", "pretrain@simclr"], repo_copy)
    encoder, ckpt = repo_copy / "models/simclr/encoder.pt", repo_copy / "models/simclr/checkpoint.pt"
    straight = encoder.read_bytes()

    proc = subprocess.Popen(["dvc", "repro", "--force", "--no-run-cache", "pretrain@simclr"], cwd=repo_copy, env=_env(repo_copy),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, position = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        try:  # replaced atomically: a read sees an old or a new checkpoint, or fails on the rename race
            state = torch.load(ckpt, weights_only=True)
        except Exception:  # noqa: BLE001
            state = {}
        if state.get("steps_in_epoch") and state.get("epoch") == 0 and not state.get("finished"):
            position = state["steps_in_epoch"]
            os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage's python, as a pre-emption would
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert position is not None, "the run ended before a checkpoint inside epoch 2 was seen"
    # the stage may write another checkpoint between the one seen and the kill landing (one step is a
    # few milliseconds): the restart resumes from the last one on disk, which must still be inside epoch 2
    state = torch.load(ckpt, weights_only=True)
    at_kill = {k: state.get(k) for k in ("epoch", "steps_in_epoch", "finished")}
    assert at_kill["epoch"] == 0 and not at_kill["finished"] and (at_kill["steps_in_epoch"] or 0) >= position, at_kill
    position = state["steps_in_epoch"]
    assert not encoder.exists()  # dvc removed the old outputs before the killed run; nothing was written since

    out = _run(["dvc", "repro", "pretrain@simclr"], repo_copy)
    assert f"after epoch 1 and {position} steps of epoch 2" in out, out[-3000:]
    assert encoder.read_bytes() == straight
