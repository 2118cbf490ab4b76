"""Collect every benchmark's recorded result into reports/benchmarks.md.

    python benchmarks/report.py [--check]

One section per ``benchmarks/*.py``: the first line of its docstring, its usage line, then
what its last run recorded: ``results/<name>.md`` (the table it printed, kept by
``record.recorded``), or for the two pipeline-level runs that record JSON only (``methods``,
``repro_wall_time``) a table made from ``results/<name>.json``; then ``results/<name>_<variant>.md``
(or ``.json``), the same script's run on a preset or the other pipeline (``finetune_recipe --preset
text``, ``repro_wall_time --pipeline text``). A benchmark with no recorded
run says so. Nothing here measures anything: re-run a benchmark, then this.
``--check`` exits 1 when reports/benchmarks.md differs from what the results give.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE.parent / "reports" / "benchmarks.md"
NOT_BENCHMARKS = {"record", "report"}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def methods_table(d: dict) -> list[str]:
    s = d["settings"]
    lines = [f"`{s['command']}`: {s['pretrain_size']:,} pretraining images. {s.get('how_assembled', '')}", "",
             "| method | epochs | pretrain s | linear top-1 | kNN-20 top-1 | random init linear | random init kNN-20 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in sorted(d["results"].items()):
        lines.append(f"| {m} | {r.get('epochs', s['epochs'])} | {r['pretrain_seconds']:.0f} | {_pct(r['linear_top1'])} | "
                     f"{_pct(r['knn20_top1'])} | {_pct(r['random_init_linear_top1'])} | {_pct(r['random_init_knn20_top1'])} |")
    return lines


def repro_wall_time_table(d: dict) -> list[str]:
    machine = d.get("cpu", f"{d['cpus']} CPUs")  # runs recorded before the CPU model was: the core count
    lines = [f"The {d.get('pipeline', 'image')} pipeline; {machine}, load average {d['load_average_before']:.1f} before and {d['load_average_after']:.1f} "
             f"after; total **{d['total_seconds']:,.1f} s ({d['total_seconds'] / 60:.1f} min)**.", "",
             "| stage | seconds |", "|---|---:|"]
    lines += [f"| {stage} | {s:.1f} |" for stage, s in d["stage_seconds"].items()]
    return lines


FROM_JSON = {"methods": methods_table, "repro_wall_time": repro_wall_time_table}


def _doc(script: Path) -> tuple[str, str]:
    """(title, usage): the docstring's first paragraph, and its first `python ...` line (comment cut)."""
    doc = ast.get_docstring(ast.parse(script.read_text())) or script.stem
    usage = next((ln.split("  #")[0].strip() for ln in doc.splitlines() if ln.strip().startswith("python ")), "")
    return " ".join(doc.split("\n\n")[0].split()), usage


def build() -> str:
    out = ["# Benchmarks", "",
           "Made by `python benchmarks/report.py` from `benchmarks/results/`: each section is the last recorded run of "
           "one `benchmarks/*.py` script. These machines are shared and noisy, so every comparison is made side by side "
           "within one run (interleaved rounds, medians, ratios); read absolute numbers beside the load recorded with them.", ""]
    for script in sorted(HERE.glob("*.py")):
        name = script.stem
        if name in NOT_BENCHMARKS or name.startswith("_"):
            continue
        title, usage = _doc(script)
        out += [f"## {name}: {title}", ""]
        if usage:
            out += [f"Usage: `{usage}`", ""]
        md, js = RESULTS / f"{name}.md", RESULTS / f"{name}.json"
        if md.exists():
            out += [md.read_text().rstrip(), ""]
        elif name in FROM_JSON and js.exists():
            out += FROM_JSON[name](json.loads(js.read_text())) + [""]
        else:
            out += ["No recorded run.", ""]
        for variant in sorted(RESULTS.glob(f"{name}_*.md")):  # the same script run on another preset
            if not variant.name.endswith(".report.md"):  # a run's copy of the pipeline report, not a table
                out += [variant.read_text().rstrip(), ""]
        if name in FROM_JSON:
            for variant in sorted(RESULTS.glob(f"{name}_*.json")):
                out += FROM_JSON[name](json.loads(variant.read_text())) + [""]
    return "\n".join(out)


def main() -> None:
    text = build()
    if "--check" in sys.argv[1:]:
        if not REPORT.exists() or REPORT.read_text() != text:
            sys.exit(f"{REPORT} is not what benchmarks/results/ gives: run python benchmarks/report.py")
        return
    REPORT.write_text(text)
    print(f"wrote {REPORT}")


if __name__ == "__main__":
    main()
