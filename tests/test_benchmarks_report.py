"""reports/benchmarks.md is what benchmarks/results/ gives: a re-run benchmark whose report was
not rebuilt fails here, so the committed report cannot drift from the recorded results."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report_module():
    spec = importlib.util.spec_from_file_location("benchmarks_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_benchmark_report_is_what_the_results_give():
    res = subprocess.run([sys.executable, "benchmarks/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_benchmark_script_has_a_section():
    text = _report_module().build()
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"record", "report"}
    assert scripts, "no benchmark scripts found"
    missing = [s for s in scripts if f"\n## {s}: " not in text]
    assert not missing, f"benchmarks without a section in reports/benchmarks.md: {missing}"


def test_a_recorded_table_lands_in_its_section(tmp_path, monkeypatch):
    report = _report_module()
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "augment.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    text = report.build()
    section = text.split("## augment: ")[1].split("\n## ")[0]
    assert "| 1 | 2 |" in section and "No recorded run." not in section
    assert "No recorded run." in text.split("## dvc_lock: ")[1].split("\n## ")[0]


def test_a_presets_recorded_table_lands_in_the_scripts_section(tmp_path, monkeypatch):
    report = _report_module()
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "finetune_recipe.md").write_text("| image | 1 |\n")
    (tmp_path / "finetune_recipe_text.md").write_text("| text | 2 |\n")
    section = report.build().split("## finetune_recipe: ")[1].split("\n## ")[0]
    assert section.index("| image | 1 |") < section.index("| text | 2 |")


def test_the_text_wall_time_lands_beside_the_image_one_and_report_copies_do_not(tmp_path, monkeypatch):
    report = _report_module()
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    run = {"total_seconds": 60.0, "load_average_before": 1.0, "load_average_after": 1.5, "cpus": 2}
    (tmp_path / "repro_wall_time.json").write_text(json.dumps(run | {"stage_seconds": {"shard": 1.0}}))
    (tmp_path / "repro_wall_time.report.md").write_text("# the image report\n")
    (tmp_path / "repro_wall_time_text.json").write_text(json.dumps(
        run | {"pipeline": "text", "cpu": "2 CPUs, Some CPU", "stage_seconds": {"text-shard": 2.0}}))
    (tmp_path / "repro_wall_time_text.report.md").write_text("# the text report\n")
    section = report.build().split("## repro_wall_time: ")[1].split("\n## ")[0]
    assert section.index("| shard | 1.0 |") < section.index("The text pipeline; 2 CPUs, Some CPU") < section.index("| text-shard | 2.0 |")
    assert "The image pipeline; 2 CPUs," in section  # a run recorded before the pipeline and CPU were
    assert "# the text report" not in section and "# the image report" not in section
