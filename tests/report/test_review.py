"""The PR review comment shows metric and param changes from committed files alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.report.review import review_comment


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


def test_review_comment_shows_metric_and_param_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    _git(tmp_path, "init", "-q", "-b", "main")
    subprocess.run(["dvc", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("pretrain:\n  lr: 0.6\n")
    (tmp_path / "m.json").write_text(json.dumps({"linear": {"top1": 0.80}}))
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - m.json\n")
    (tmp_path / "report.md").write_text("# the report\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "base")
    _git(tmp_path, "checkout", "-qb", "change")
    (tmp_path / "params.yaml").write_text("pretrain:\n  lr: 0.3\n")
    (tmp_path / "m.json").write_text(json.dumps({"linear": {"top1": 0.85}}))
    _git(tmp_path, "commit", "-qam", "change")
    text = review_comment("main", tmp_path / "report.md")
    assert "linear.top1" in text and "0.8" in text and "0.85" in text
    assert "pretrain.lr" in text and "0.3" in text
    assert "# the report" in text
