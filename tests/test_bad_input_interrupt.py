"""Ctrl-C (issue 29): the shard stage with 2 worker processes, interrupted mid-run by SIGINT to its
process group (as a terminal sends it), stops every process within seconds, prints one line and
exits 130, leaving no shard folder (it printed tracebacks, and hung in about half the tries).
This is ``benchmarks/interrupt.py --smoke``; the benchmark times 10 tries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ctrl_c_stops_the_shard_stage_and_its_workers(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "benchmarks/interrupt.py"), "--smoke", "--timeout", "20",
                          "--json", str(tmp_path / "runs.json")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    [run] = json.loads((tmp_path / "runs.json").read_text())["runs"]["this code"]
    assert "error" not in run, run
    assert not run["hang"] and run["seconds"] < 10, run  # every process gone (0.7-1.0 s on a loaded 2-core machine)
    assert run["status"] == 130 and run["stderr_lines"] == 1 and not run["traceback"], run
    assert run["last_line"] == "error: interrupted; nothing was written" and run["left_behind"] == [], run


def test_an_interrupted_pretraining_says_what_it_kept():
    """The pretrain stage's line names the checkpoint it keeps (the wrapper every stage uses)."""
    code = ("from pipeline.errors import exit_on_user_error\n"
            "@exit_on_user_error(kept='the checkpoint resumes the run')\n"
            "def main():\n    raise KeyboardInterrupt\n"
            "main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert (res.returncode, res.stderr) == (130, "error: interrupted; the checkpoint resumes the run\n")
