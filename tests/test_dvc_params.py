"""Process counts are not DVC params: changing ``data.workers``, ``pretrain.loader_workers`` or
``pretrain.nproc_per_node`` leaves ``dvc status`` clean (the outputs are the same for any), while
every other key of those sections is tracked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.config import DataParams, PretrainParams

ROOT = Path(__file__).resolve().parents[1]
# max_image_pixels only decides whether the stage refuses an image (left out of the manifest too)
RUNTIME = {"data": {"workers", "max_image_pixels"}, "pretrain": {"loader_workers", "nproc_per_node"}}
STAGES = {"data": ("shard", "text-shard"), "pretrain": ("pretrain", "text-pretrain")}
# config keys with a default in code only (not in params.yaml, so DVC cannot track them there)
NOT_IN_PARAMS_YAML = {"data": set(), "pretrain": {"betas", "lars_eta", "grad_clip", "lr_scaling"}}


def _tracked(stage: dict, section: str) -> set[str]:
    keys = set()
    for entry in stage["params"]:
        name = entry if isinstance(entry, str) else next(iter(entry))
        assert name != section, f"the whole {section} section is tracked"
        if name.startswith(section + "."):
            keys.add(name.split(".", 1)[1])
    return keys


def test_every_key_but_the_process_counts_is_tracked():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    fields = {"data": set(DataParams.model_fields), "pretrain": set(PretrainParams.model_fields)}
    for section, names in STAGES.items():
        assert set(params[section]) == fields[section] - NOT_IN_PARAMS_YAML[section], section
        for name in names:
            assert _tracked(stages[name], section) == set(params[section]) - RUNTIME[section], name


def _dvc(repo: Path, *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + res.stdout
    return res.stdout


def test_changing_a_process_count_leaves_dvc_status_clean(tmp_path):
    """The real dvc.yaml and params.yaml in a scratch repository, shard and pretrain@simclr
    committed with stand-in outputs; then ``dvc status`` after editing params.yaml."""
    repo = tmp_path / "repo"
    top = {".git", ".dvc", "dvc.lock", "data", "models", "metrics", "dvclive", "reports", "text", "tests", "benchmarks", ".venv"}
    shutil.copytree(ROOT, repo, ignore=lambda d, names: [n for n in names if n == "__pycache__" or (Path(d) == ROOT and n in top)])
    for out in ["data/shards/manifest.json", "models/simclr/encoder.pt", "models/simclr/provenance.json",
                "models/simclr/checkpoint.pt", "metrics/pretrain/simclr.json", "metrics/pretrain/simclr.timing.json",
                *(f"dvclive/pretrain/simclr/plots/metrics/{c}.tsv" for c in ("loss", "knn_top1", "lr", "epoch"))]:
        (repo / out).parent.mkdir(parents=True, exist_ok=True)
        (repo / out).write_text("{}\n")
    _dvc(repo, "init", "--no-scm", "-q")
    _dvc(repo, "commit", "-f", "-q", "shard", "pretrain@simclr")
    assert "up to date" in _dvc(repo, "status", "shard", "pretrain@simclr")

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["workers"] = 3
    params["pretrain"].update(loader_workers=5, nproc_per_node=4)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    assert "up to date" in _dvc(repo, "status", "shard", "pretrain@simclr")

    params["data"]["shard_size"] = 5000
    params["pretrain"]["shuffle_buffer"] = 100
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = _dvc(repo, "status", "shard", "pretrain@simclr")
    assert "data.shard_size" in status and "pretrain.shuffle_buffer" in status
