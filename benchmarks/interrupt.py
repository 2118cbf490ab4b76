"""Ctrl-C in the shard stage: the time from SIGINT to every process of the stage gone.

    python benchmarks/interrupt.py [--images 20000] [--tries 10] [--workers 2] [--before DIR]
                                   [--timeout 30] [--json FILE] [--smoke]

Generates an ImageFolder of ``--images`` greyscale PNGs (64 x 64 noise, 2 classes; 200 distinct
files, the rest hard links to them, so generation stays fast: a file is read and decoded
whatever its content), then per try runs ``python stages/shard.py`` on it with
``data.workers`` ``--workers`` in a session of its own, waits until the first tar appears in
the staged shard folder (the pool is encoding: mid-run), and sends SIGINT to the process group,
as a terminal's Ctrl-C does. It measures the time until the stage's process and all its
workers have exited (polled every 10 ms); a stage still alive ``--timeout`` seconds after the
signal is killed (SIGKILL) and counted as a hang. Per try it records the exit status, the
lines on stderr, whether a traceback was printed, and whether a shard folder (or its
``.tmp``) was left behind.

``--before DIR``: a checkout of the code before the fix (``git archive main | tar -x -C DIR``);
its tries run interleaved with this code's, on the same folder. Prints a markdown table
(median and max time to exit, hangs, statuses) and, with ``--json``, every try.
``--smoke``: 2,000 images, 1 try (what ``tests/test_bad_input_interrupt.py`` runs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_folder(root: Path, n: int, unique: int = 200) -> Path:
    """``root/{a,b}/NNNNNN.png``: ``unique`` distinct 64 x 64 noise images, the rest hard links."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    for i in range(n):
        path = root / ("a", "b")[i % 2] / f"{i:06d}.png"
        if i < unique:
            Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
        else:
            os.link(root / ("a", "b")[i % 2] / f"{i % unique:06d}.png", path)
    return root


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _default_sigint() -> None:
    """In the stage's process before it starts: SIGINT as a terminal's foreground job has it
    (a benchmark started in the background, ``&``, passes SIGINT on ignored, and Python keeps an
    ignored SIGINT ignored: the stage would never see the Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_once(code: Path, folder: Path, work: Path, workers: int, timeout: float) -> dict:
    """One run of ``code``'s shard stage on ``folder``, interrupted mid-run; what happened."""
    raw = yaml.safe_load((code / "params.yaml").read_text())
    raw["data"].update(source="imagefolder", root=str(folder), pretrain_size=None, train_size=None, val_size=100,
                       test_fraction=0.1, shard_size=500, workers=workers)
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(raw))
    out = work / "shards"
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.Popen([sys.executable, str(code / "stages" / "shard.py"), "--params", "params.yaml", "--out", "shards"],
                            cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    staged = out.with_name("shards.tmp")
    while not (staged.is_dir() and any(staged.glob("*.tar"))):
        if proc.poll() is not None:
            return {"error": f"the stage ended before it was interrupted (status {proc.returncode}): {proc.stderr.read()[-500:]}"}
        time.sleep(0.01)
    t0 = time.perf_counter()
    os.killpg(proc.pid, signal.SIGINT)
    hang = False
    while proc.poll() is None or _alive(proc.pid):
        if time.perf_counter() - t0 > timeout:
            hang = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.01)
    seconds = time.perf_counter() - t0
    stderr = proc.stderr.read()
    return {"seconds": round(seconds, 3), "hang": hang, "status": proc.returncode, "stderr_lines": len(stderr.splitlines()),
            "traceback": "Traceback" in stderr, "last_line": (stderr.strip().splitlines() or [""])[-1],
            "left_behind": sorted(p.name for p in (out, staged) if p.exists())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--tries", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--before", type=Path, help="a checkout of the code before the fix, run interleaved")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds after SIGINT before a run counts as a hang")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.images, args.tries = 2000, 1
    codes = {"this code": REPO} | ({"before": args.before.resolve()} if args.before else {})
    runs: dict[str, list[dict]] = {name: [] for name in codes}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "images", args.images)
        for i in range(args.tries):
            for name, code in codes.items():  # interleaved: the machine's load falls on both alike
                result = interrupt_once(code, folder, Path(tmp) / f"{name}-{i}".replace(" ", "_"), args.workers, args.timeout)
                runs[name].append(result)
                print(f"{name} try {i + 1}: {result}", file=sys.stderr, flush=True)
    print(f"| code | tries | median s to exit | max s | hangs (> {args.timeout:.0f} s) | statuses | tracebacks | left behind |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for name, rs in runs.items():
        done = [r for r in rs if "seconds" in r]
        times = [r["seconds"] for r in done if not r["hang"]]
        print(f"| {name} | {len(done)} | {statistics.median(times) if times else float('nan'):.2f} | "
              f"{max(times) if times else float('nan'):.2f} | {sum(r['hang'] for r in done)} | "
              f"{sorted({r['status'] for r in done})} | {sum(r['traceback'] for r in done)} | {sum(bool(r['left_behind']) for r in done)} |")
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "workers": args.workers, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
