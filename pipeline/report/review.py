"""The pull-request review comment: what a change did to every metric and param, and the report.

    python -m pipeline.report.review [--base main] [--report reports/report.md]

Reads only committed files (metric JSONs, params.yaml, the report) through `dvc metrics diff`
and `dvc params diff`, so it needs no GPU, no DVC remote and no pipeline run. The GitHub
workflow posts exactly this text; run it locally to see what reviewers will see.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def _dvc(*args: str) -> str:
    res = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if res.returncode:
        return f"`dvc {' '.join(args)}` failed: {res.stderr.strip()[:500]}"
    return res.stdout.strip() or "No changes."


def review_comment(base: str, report: Path) -> str:
    parts = [
        f"## SSL pipeline: changes against `{base}`",
        "",
        "### Metrics",
        "",
        _dvc("metrics", "diff", base, "--md"),
        "",
        "### Params",
        "",
        _dvc("params", "diff", base, "--md"),
        "",
        "<details><summary>Report (reports/report.md)</summary>",
        "",
        report.read_text() if report.is_file() else f"{report} not found: run `dvc repro` and commit it.",
        "",
        "</details>",
    ]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="main", help="git revision to compare against")
    ap.add_argument("--report", default="reports/report.md")
    args = ap.parse_args()
    sys.stdout.write(review_comment(args.base, Path(args.report)))


if __name__ == "__main__":
    main()
