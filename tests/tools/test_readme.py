"""The README is short, and every number in it comes from a committed result file."""

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
# README headline table: column -> (protocol, metric key); row -> metrics file stem
COLUMNS = {"linear": ("linear_eval", "linear_top1"), "kNN-20": ("knn", "knn20_top1"),
           "5-way 5-shot": ("few_shot", "prototype_5way_5shot"), "transfer digits": ("transfer", "digits_top1"),
           "transfer MNIST sample": ("transfer", "mnist-sample_top1"), "finetune": ("finetune", "top1")}
ROWS = {"SimCLR": "simclr", "random-init encoder": "random_init", "raw pixels": "raw_pixels"}


def _table(header_start: str) -> list[list[str]]:
    lines = README[README.index(header_start):].splitlines()
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return [rows[0]] + rows[2:]


def test_readme_is_short_and_keeps_the_test_command():
    assert len(README) < 10_000
    assert "bash scripts/run.sh test" in README and "python -m pytest -q" in README  # .ci/run and the workflow run it
    for stale in ("the issue's 15 minutes", "88% goal", "294 columns"):
        assert stale not in README


def test_headline_table_matches_the_metric_files():
    header, *rows = _table("| encoder | linear |")
    assert [r[0] for r in rows] == list(ROWS) and header[1:] == list(COLUMNS)
    for row in rows:
        for col, cell in zip(header[1:], row[1:]):
            protocol, key = COLUMNS[col]
            metrics = json.loads((REPO / "metrics" / protocol / f"{ROWS[row[0]]}.json").read_text())
            expect = f"{100 * metrics[key]:.1f}" if key in metrics else "-"
            assert cell == expect, f"README {row[0]} / {col}: {cell}, metrics say {expect}"


def test_timings_and_sizes_match_the_result_files():
    image = json.loads((REPO / "benchmarks/results/repro_wall_time.json").read_text())["total_seconds"]
    text = json.loads((REPO / "benchmarks/results/repro_wall_time_text.json").read_text())["total_seconds"]
    assert f"image pipeline took {image:.1f} s" in README and f"text pipeline\n{text:.1f} s" in README
    assert f"about {round((image + text) / 60)} min on 2 CPU cores" in README
    assert "AMD EPYC" in json.loads((REPO / "benchmarks/results/repro_wall_time.json").read_text())["cpu"]
    size = json.loads((REPO / "benchmarks/results/install_size.json").read_text())
    assert f"{size['venv_bytes'] / 1e9:.1f} GB installed" in README
    assert f"{size['apt_download_bytes'] / 1e6:.0f} MB of Debian packages" in README


def test_own_images_snippet_is_the_photos_preset():
    snippet = yaml.safe_load(re.search(r"```yaml\n(.*?)```", README, re.S).group(1))["data"]
    preset = yaml.safe_load((REPO / "presets/photos.yaml").read_text())["data"]
    for key in ("source", "channels", "image_size", "store_size"):
        assert snippet[key] == preset[key], key
    assert f"{preset['image_size']}x{preset['image_size']} RGB" in README
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["pretrain"]["epochs"] == 30 and "SimCLR, 30 epochs" in README
    assert f"would become {params['data']['image_size']}x{params['data']['image_size']} grey" in README


@pytest.mark.parametrize("link", sorted(set(re.findall(r"\]\(((?:docs|reports)/[^)#]+|LICENSE)\)", README))))
def test_linked_pages_exist(link):
    assert (REPO / link).is_file(), link
