"""Evaluation params that do not fit the shards: `error: ...`, exit 2, no traceback and no
metrics file, before any featurizing or training (the stage script in a subprocess)."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder_path(tiny_shards, tmp_path_factory) -> Path:
    from pipeline.config import EncoderParams
    from pipeline.shards.manifest import read_manifest
    from pipeline.modalities.encoders import build_encoder, save_encoder

    path = tmp_path_factory.mktemp("encoder") / "enc.pt"
    save_encoder(build_encoder(EncoderParams(width=8), read_manifest(tiny_shards)), path)
    return path


def _evaluate(protocol: str, edits: dict, tmp_path: Path, shards: Path, encoder: Path) -> tuple[subprocess.CompletedProcess, Path]:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in edits.items():
        raw[section].update(values)
    params, metrics = tmp_path / "params.yaml", tmp_path / "metrics.json"
    params.write_text(yaml.safe_dump(raw))
    res = subprocess.run([sys.executable, str(REPO / "stages" / "evaluate.py"), protocol, "--params", str(params),
                          "--encoder", str(encoder), "--shards", str(shards), "--metrics", str(metrics),
                          "--details", str(tmp_path / "details.json")],
                         cwd=tmp_path, capture_output=True, text=True)
    return res, metrics


# tiny_shards: train 400 images (smallest class 35), val 200 (smallest 17), test 300 (smallest 24)
@pytest.mark.parametrize("protocol, edits, message", [
    ("few_shot", {"few_shot": {"shots": [1, 10], "queries": 15}},
     "error: few_shot.shots: 10-shot episodes with few_shot.queries=15 need 25 test images per class, but the smallest "
     "test class ('dress') has 24"),
    ("knn", {"knn": {"ks": [20, 500]}},
     "error: knn.ks: k=500 is larger than the kNN bank of 400 train images"),
    ("label_efficiency", {"label_efficiency": {"fractions": [0.01, 0.5]}},
     "error: label_efficiency.fractions: 0.01 of the smallest val class"),
])
def test_params_that_do_not_fit_the_shards_exit_2_without_metrics(protocol, edits, message, tmp_path, tiny_shards, encoder_path):
    res, metrics = _evaluate(protocol, edits, tmp_path, tiny_shards, encoder_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not metrics.exists() and not (tmp_path / "details.json").exists()
