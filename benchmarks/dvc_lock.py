"""What DVC spends on dvc.lock between stages, with and without ruamel.yaml's C parser.

    python benchmarks/dvc_lock.py [--rev GIT_REV ...] [--stage STAGE] [--rounds 5]

Between two stages `dvc repro` parses the whole lock file several times (`typ="safe"`: the C
parser when the `ruamel.yaml.clib` wheel is installed, pure Python otherwise) and rewrites it
once through a round-trip parse and dump (pure Python either way). Per lock file (this
checkout's, and the one committed at each --rev):

- one safe parse, C vs pure Python (`YAML(typ="safe", pure=True)`);
- one round trip (`typ="rt"` parse + dump), what writing a stage's entry costs;
- `dvc status [STAGE]` in a subprocess (every stage by default: what a no-op `dvc repro`
  checks), with the C parser and with it hidden (a `sitecustomize` that makes
  `import _ruamel_yaml` fail), against this checkout's lock.

Interleaved round by round (this machine is shared and noisy); medians and ratios.
Prints a markdown table; writes benchmarks/results/dvc_lock.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ruamel.yaml import YAML
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _round_trip(text: str) -> None:
    yaml = YAML()
    yaml.dump(yaml.load(text), io.StringIO())


def _dvc_status(stage: str, env: dict) -> None:
    subprocess.run([sys.executable, "-m", "dvc", "status", *filter(None, [stage])], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", action="append", default=[], help="also parse dvc.lock as committed at this git revision")
    ap.add_argument("--stage", default="", help="the stage `dvc status` checks (default: all of them)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    if importlib.util.find_spec("_ruamel_yaml") is None:  # ruamel.yaml.clib
        sys.exit("ruamel.yaml.clib is not installed: nothing to compare (pip install -c constraints.txt ruamel.yaml.clib)")

    locks = {"dvc.lock": (REPO / "dvc.lock").read_text()}
    for rev in args.rev:
        locks[f"dvc.lock at {rev}"] = subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=REPO, check=True,
                                                     capture_output=True, text=True).stdout
    blocker = tempfile.mkdtemp()
    Path(blocker, "sitecustomize.py").write_text("import sys\nsys.modules['_ruamel_yaml'] = None  # ruamel falls back to pure Python\n")
    env_c = dict(os.environ)
    env_pure = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [blocker, os.environ.get("PYTHONPATH")])))

    cases = {}
    for path, text in locks.items():
        cases[f"{path}: safe parse, C"] = lambda t=text: YAML(typ="safe").load(t)
        cases[f"{path}: safe parse, pure Python"] = lambda t=text: YAML(typ="safe", pure=True).load(t)
        cases[f"{path}: round trip (rt parse + dump)"] = lambda t=text: _round_trip(t)
    cases[f"dvc status {args.stage}".rstrip() + ", C"] = lambda: _dvc_status(args.stage, env_c)
    cases[f"dvc status {args.stage}".rstrip() + ", pure Python"] = lambda: _dvc_status(args.stage, env_pure)

    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(_timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"{args.rounds} interleaved rounds, medians; lines: " +
          ", ".join(f"{p} {t.count(chr(10)):,}" for p, t in locks.items()) + "\n")
    print("| what | median s | pure Python / C |\n|---|---:|---:|")
    for name, s in med.items():
        pure = name.replace(", C", ", pure Python")
        ratio = f"{med[pure] / s:.2f}x" if name.endswith(", C") else ""
        print(f"| {name} | {s:.3f} | {ratio} |")
    out = REPO / "benchmarks" / "results" / "dvc_lock.json"
    out.write_text(json.dumps({"rounds": args.rounds, "lines": {p: t.count("\n") for p, t in locks.items()},
                               "seconds": times, "median_s": med, "machine": platform.machine()}, indent=1) + "\n")


if __name__ == "__main__":
    with recorded("dvc_lock"):
        main()
