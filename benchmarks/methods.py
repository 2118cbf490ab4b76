"""Every registered method through the real pipeline on the embedded dataset, short schedule.

    python benchmarks/methods.py [--epochs 3] [--epochs-for mae=20,beit=20] [--pretrain-size 10000]
                                 [--methods simclr,byol,...] [--out benchmarks/results/methods_<tag>.json]

Copies the repository to a temporary directory, sets `methods:` to every method, shortens
pretraining (``--epochs`` for all, ``--epochs-for`` for the methods that need a longer
schedule; each method keeps the rest of its params.yaml recipe), and runs the `linear_eval`
and `knn` protocols on each (`dvc repro evaluate@<method>-linear_eval ...`, which runs shard
and pretrain@<method> first) and on the random init of its architecture (`baseline@...`).
Records per method: pretrain wall time, final loss, linear (L-BFGS, C swept on val) and
kNN-20 top-1 of the pretrained encoder and of the same architecture at random init. Writes
benchmarks/results/methods.json (a subset of methods: ``--out methods_<tag>.json`` beside it,
which benchmarks/report.py adds as a second table) with the command, the CPU model and the
load average, and prints a table.

The ViT methods of issue 27 (each against its own ViT's random init, random_init_<method>):
    python benchmarks/methods.py --methods simmim,msn,ijepa,ibot,dinov2 --out benchmarks/results/methods_vit.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from pipeline.registry import METHODS

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--epochs-for", default="", help="per-method epochs, e.g. mae=20,beit=20")
    ap.add_argument("--pretrain-size", type=int, default=10000)
    ap.add_argument("--methods", default=",".join(METHODS.names()))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "methods.json"))
    args = ap.parse_args()
    methods = args.methods.split(",")
    epochs_for = {m: int(e) for m, e in (kv.split("=") for kv in args.epochs_for.split(",") if kv)}
    results = {}
    settings = vars(args) | {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
                             "cpu": _cpu_model(), "load_average_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # PYTHONPATH: the stages import the copy's pipeline/, not the editable install's (the
        # checkout, which may change while the benchmark runs)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", PYTHONPATH=str(work))
        run = lambda cmd, cwd: subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)  # noqa: E731
        for f in run(["git", "ls-files", "-co", "--exclude-standard"], REPO).stdout.split():
            if f.startswith(("metrics/", "reports/", "benchmarks/results/")) or f == "dvc.lock" or not (REPO / f).is_file():
                continue
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, work / f)
        params = yaml.safe_load((work / "params.yaml").read_text())
        params["methods"] = methods
        params["data"]["pretrain_size"] = args.pretrain_size
        params["pretrain"]["epochs"] = args.epochs
        params["linear_eval"]["sgd_epochs"] = 0  # protocol (a) and kNN only, to keep the sweep short
        params["protocols"] = ["linear_eval", "knn"]
        own = [m for m in methods if "encoder" in (params.get(m) or {})]  # e.g. MAE's ViT: its own random init
        params["baselines"] = ["random_init"] + [f"random_init_{m}" for m in own]
        for m in methods:  # method-level overrides keep their recipe (optimizer, lr); only the epochs change
            if m in epochs_for or isinstance(params.get(m, {}).get("pretrain"), dict):
                params.setdefault(m, {}).setdefault("pretrain", {})["epochs"] = epochs_for.get(m, args.epochs)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"]):
            run(cmd, work)
        print(f"{'method':14s} {'pretrain s':>10s} {'loss':>8s} {'linear':>7s} {'rand lin':>8s} {'kNN-20':>7s} {'rand kNN':>8s}", flush=True)
        for m in methods:
            t0 = time.time()
            base = f"random_init_{m}" if m in own else "random_init"
            res = run(["dvc", "repro", *(f"{stage}-{p}" for stage in (f"evaluate@{m}", f"baseline@{base}")
                                         for p in ("linear_eval", "knn"))], work)
            if res.returncode:
                results[m] = {"error": (res.stdout + res.stderr)[-1500:]}
                print(f"{m:14s} FAILED\n{results[m]['error']}", flush=True)
            else:
                results[m] = _row(work, m, base, time.time() - t0)
                r = results[m]
                print(f"{m:14s} {r['pretrain_seconds']:10.0f} {r['loss']:8.3f} {100 * r['linear_top1']:7.1f} {100 * r['random_init_linear_top1']:8.1f} "
                      f"{100 * r['knn20_top1']:7.1f} {100 * r['random_init_knn20_top1']:8.1f}", flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            settings["load_average_after"] = os.getloadavg()[0]  # shared machines: read timings beside the load
            Path(args.out).write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")


def _cpu_model() -> str:
    """lscpu's model name and the cores this process may use (what a timing means depends on both)."""
    res = subprocess.run(["lscpu"], capture_output=True, text=True)
    model = next((ln.split(":", 1)[1].strip() for ln in res.stdout.splitlines() if ln.startswith("Model name")), "unknown CPU")
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def _row(work: Path, m: str, base: str, seconds: float) -> dict:
    read = lambda *parts: json.loads((work / "metrics" / Path(*parts)).read_text())  # noqa: E731
    pre = read("pretrain", f"{m}.json") | read("pretrain", f"{m}.timing.json")  # wall times live apart
    r = {"pretrain_seconds": pre["wall_seconds"], "stage_seconds_incl_eval": round(seconds, 1), "loss": pre["loss"],
         "linear_top1": read("linear_eval", f"{m}.json")["linear_top1"], "knn20_top1": read("knn", f"{m}.json")["knn20_top1"],
         "random_init_linear_top1": read("linear_eval", f"{base}.json")["linear_top1"],
         "random_init_knn20_top1": read("knn", f"{base}.json")["knn20_top1"]}
    r["beats_random_init"] = r["linear_top1"] > r["random_init_linear_top1"] and r["knn20_top1"] > r["random_init_knn20_top1"]
    return r


if __name__ == "__main__":
    main()
