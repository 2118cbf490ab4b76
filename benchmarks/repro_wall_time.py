"""Wall time of the default image (or text) `dvc repro`, stage by stage, on a fresh copy of the repository.

    python benchmarks/repro_wall_time.py [--pipeline image|text] [--params params.yaml] [--in-place] [--out FILE]

Copies the tracked files to a temporary directory (no cached results) -- or, with
--in-place, uses this checkout after removing that pipeline's outputs, so the run also
produces the dvc.lock entries, metrics and report to commit (the other pipeline's entries and
outputs are left as they are) -- then runs each stage of the pipeline (image: every stage but
`text-*`; text: the `text-*` stages) with `dvc repro -f -s <stage>` in pipeline order and
records its seconds, plus the headline metrics the run produced, in
results/repro_wall_time.json (text: results/repro_wall_time_text.json). Not a test: these
machines are shared, so read it beside the machine's load at the time (recorded as the
1-minute load average before and after) and its CPU model (recorded too: the same default
took 1,291 s on one 2-core CPU and 683 s on another).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from record import machine  # noqa: E402

# What each pipeline writes (the persistent checkpoints go with their models: a run must not resume)
OUTPUTS = {
    "image": ("data/shards", "models", "dvclive", "metrics", "reports/report.md", "reports/figures"),
    "text": ("text/data/shards", "text/models", "text/dvclive", "text/metrics", "reports/text"),
}
REPORTS = {"image": "reports/report.md", "text": "reports/text/report.md"}


def _in_pipeline(stage: str, pipeline: str) -> bool:
    return stage.startswith("text-") == (pipeline == "text")


def _run(args, cwd, env):
    res = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"{args} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return res.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pipeline", choices=sorted(OUTPUTS), default="image")
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--out", help="default: benchmarks/results/repro_wall_time.json (text: repro_wall_time_text.json)")
    ap.add_argument("--in-place", action="store_true", help="run in this checkout (its outputs are replaced)")
    args = ap.parse_args()
    suffix = "" if args.pipeline == "image" else f"_{args.pipeline}"
    args.out = args.out or str(REPO / "benchmarks" / "results" / f"repro_wall_time{suffix}.json")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    with tempfile.TemporaryDirectory() as tmp:
        work = REPO if args.in_place else Path(tmp)
        if args.in_place:
            for out in OUTPUTS[args.pipeline]:
                path = REPO / out
                path.unlink() if path.is_file() else shutil.rmtree(path, ignore_errors=True)
            _measure(work, env, args)
            return
        files = _run(["git", "ls-files"], REPO, env).split()
        for f in files:
            if f.startswith(("metrics/", "reports/", "benchmarks/results/", "text/")) or f == "dvc.lock":
                continue
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, work / f)
        shutil.copy2(args.params, work / "params.yaml")
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
            _run(cmd, work, env)
        _measure(work, env, args)


def _measure(work: Path, env: dict, args) -> None:
    # dvc.yaml lists shard, pretrain, the evaluations and baselines, then report: an order that runs
    # each stage after its inputs
    stages = [s for s in _run(["dvc", "stage", "list", "--name-only"], work, env).split() if _in_pipeline(s, args.pipeline)]
    load_before = os.getloadavg()[0]
    seconds, t_all = {}, time.time()
    for stage in stages:
        t0 = time.time()
        _run(["dvc", "repro", "-f", "-s", stage], work, env)
        seconds[stage] = round(time.time() - t0, 1)
        print(f"{stage:24s} {seconds[stage]:8.1f} s", flush=True)
    total = round(time.time() - t_all, 1)
    metrics_dir = work / ("text/metrics" if args.pipeline == "text" else "metrics")
    metrics = {p.relative_to(metrics_dir).as_posix(): json.loads(p.read_text()) for p in metrics_dir.rglob("*.json")
               if not p.name.endswith(".details.json")}  # the headline files
    report = (work / REPORTS[args.pipeline]).read_text()
    result = {"pipeline": args.pipeline, "total_seconds": total, "stage_seconds": seconds, "load_average_before": load_before,
              "load_average_after": os.getloadavg()[0], "cpus": os.cpu_count(), "cpu": machine(), "platform": platform.platform(),
              "metrics": metrics}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    Path(args.out).with_suffix(".report.md").write_text(report)
    print(f"total {total:.1f} s ({total / 60:.1f} min) -> {args.out}")


if __name__ == "__main__":
    main()
