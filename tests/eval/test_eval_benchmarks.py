"""The evaluation-scale benchmarks run to the end at their smoke sizes (issue 26, item 6)."""

import subprocess
import sys

import pytest

from pipeline.config import parse_params
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from probe_backends import compare  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_imagenet_sim_smoke_runs_every_stage_and_projects(tmp_path):
    """Two tiny sizes of the ImageNet-layout photos: shard, pretrain and (to keep the suite's
    time) the kNN stage; the projection row is printed for each."""
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "imagenet_sim.py"), "--smoke", "--protocols", "knn",
                           "--keep", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert {"shard", "pretrain", "knn"} <= set(rows)
    cells = [float(c) for c in rows["knn"].split("|")[2:-1]]
    assert all(c >= 0 for c in cells[:9]) and cells[8] > 0  # measured; MiB read by the kNN stage at the larger size > 0
    assert all(c > 0 or c != c for c in cells[9:])  # projections: positive, or nan where the slope was not
    assert "Projected: the line through the two sizes" in proc.stdout
    assert (tmp_path / "imagenet-sim-60" / "train").is_dir() and (tmp_path / "imagenet-sim-60" / "val").is_dir()


def test_probe_backends_smoke(tiny_shards, default_params_dict):
    rows = compare(str(tiny_shards), parse_params(default_params_dict), 1, c_grid=[1.0], max_iter=20)
    for r in rows:
        assert r["knn_one"] == r["knn_per_k"]
        assert abs(r["res"]["torch"]["top1"] - r["res"]["sklearn"]["top1"]) < 0.05
