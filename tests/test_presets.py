"""Presets are overlays on params.yaml: valid when merged, holding only what differs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_params
from pipeline.presets import PRESETS, apply

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in PRESETS.glob("*.yaml"))


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _get(d, dotted):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return KeyError
        d = d[part]
    return d


def test_there_is_a_gpu_preset():
    assert "gpu" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_preset_merges_into_valid_params_and_holds_only_differences(name):
    base_text = (ROOT / "params.yaml").read_text()
    overlay = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    merged = yaml.safe_load(apply(base_text, (PRESETS / f"{name}.yaml").read_text()))
    parse_params(merged)
    base = yaml.safe_load(base_text)
    same = [k for k, v in _leaves(overlay) if _get(base, k) == v]
    assert not same, f"presets/{name}.yaml repeats params.yaml values (an overlay holds only differences): {same}"
    for key, value in _leaves(overlay):
        assert _get(merged, key) == value, key
    # every other value comes from params.yaml
    for key, value in _leaves(base):
        if not any(key == k or key.startswith(k + ".") for k, _ in _leaves(overlay)) and _get(overlay, key) is KeyError:
            assert _get(merged, key) == value, key


def test_gpu_preset_is_the_documented_recipe():
    merged = parse_params(yaml.safe_load(apply((ROOT / "params.yaml").read_text(), (PRESETS / "gpu.yaml").read_text())))
    assert merged.data.pretrain_size is None and merged.data.train_size is None  # the full dataset
    assert list(merged.encoder.layers) == [2, 2, 2, 2] and merged.encoder.width == 64
    assert merged.pretrain.epochs == 500
    # the label-efficiency arms follow the finetune and linear_eval recipes
    sections = merged.protocol_params
    assert sections["label_efficiency"].finetune == sections["finetune"]
    assert sections["label_efficiency"].c_grid == sections["linear_eval"].c_grid == sections["transfer"].c_grid


def test_cli_merges_in_place_keeping_comments_and_refuses_unknown_presets(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline.presets", *a, "--params", str(params)],  # noqa: E731
                                    capture_output=True, text=True, cwd=ROOT)
    res = run("gpu")
    assert res.returncode == 0, res.stderr
    text = params.read_text()
    assert "# Embedded default" in text and yaml.safe_load(text)["pretrain"]["epochs"] == 500
    res = run("tpu")
    assert res.returncode == 2 and "unknown preset 'tpu'" in res.stderr and "Traceback" not in res.stderr


def test_stages_load_a_preset_as_the_cli_would_write_it():
    """`--preset text` (the text-* stages) gives the params `python -m pipeline.presets text` writes."""
    from pipeline.config import load_params

    written = parse_params(yaml.safe_load(apply((ROOT / "params.yaml").read_text(), (PRESETS / "text.yaml").read_text())))
    loaded = load_params(ROOT / "params.yaml", "text")
    assert loaded == written
    assert loaded.data.source == "fortunes" and loaded.encoder.arch == "transformer"
    sections = loaded.protocol_params
    assert sections["label_efficiency"].finetune == sections["finetune"]  # the alias still feeds both sections


def test_an_unknown_preset_is_refused_naming_the_valid_ones():
    from pipeline.config import load_params
    from pipeline.errors import UserError

    with pytest.raises(UserError, match=r"--preset 'txt'.*valid presets are \['gpu', 'imagenet', 'photos', 'text'\]"):
        load_params(ROOT / "params.yaml", "txt")


def test_text_stage_matrices_are_the_text_presets_methods_and_baselines():
    """dvc.yaml cannot read the preset's lists (its templating reads params.yaml), so tools/dvc_yaml.py writes them."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    preset = yaml.safe_load((PRESETS / "text.yaml").read_text())
    assert stages["text-pretrain"]["matrix"]["method"] == preset["methods"]
    assert stages["text-evaluate"]["matrix"]["method"] == preset["methods"]
    assert stages["text-baseline"]["matrix"]["baseline"] == preset["baselines"]


def test_every_stage_run_with_a_preset_depends_on_it():
    """A stage whose command reads `--preset X` re-runs when presets/X.yaml changes: it lists the
    file as a dep, or its keys as params (all of them: a bare `presets/X.yaml:` entry)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = []
    for name, stage in stages.items():
        for preset in re.findall(r"--preset (\S+)", stage["cmd"]):
            path = f"presets/{preset}.yaml"
            as_params = any(isinstance(p, dict) and path in p and p[path] is None for p in stage.get("params", []))
            if path not in stage.get("deps", []) and not as_params:
                missing.append(f"{name}: {path}")
    assert not missing, f"stages that read a preset without depending on it: {missing}"
    assert any("--preset" in s["cmd"] for s in stages.values())
