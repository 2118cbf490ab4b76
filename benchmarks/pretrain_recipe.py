"""Pretraining recipes compared on val, never on test: for each variant, the `pretrain@<method>`
stage itself (stages/pretrain.py, in a scratch folder, on the committed `data/shards`), then the
linear probe's C sweep with the train split's features, top-1 on the val split (the best C's).

    python benchmarks/pretrain_recipe.py '[{"pretrain": {"epochs": 15}}, {"pretrain": {"epochs": 15}, "simclr": {"temperature": 0.1}}]'

Each argument entry is a dict merged over params.yaml (mappings key by key, as a preset is),
so a variant names only what it changes. Pretraining is deterministic on one CPU model, so
one run per variant gives its number; the seconds are the stage's own wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def pretrain(params_file: Path, method: str, out: Path) -> float:
    """Run the pretrain stage with ``params_file``; returns its wall seconds."""
    t0 = time.time()
    subprocess.run([sys.executable, "stages/pretrain.py", "--params", str(params_file), "--method", method,
                    "--shards", "data/shards", "--out", str(out), "--metrics", str(out / "metrics.json"),
                    "--timing", str(out / "timing.json"), "--live", str(out / "live")],
                   cwd=REPO, check=True, stdout=sys.stderr)
    return time.time() - t0


def val_probe(encoder_file: Path, params) -> float:
    """Best val top-1 over ``linear_eval.c_grid`` of the probe fitted on the train split."""
    from pipeline.shards.read import load_split
    from pipeline.eval.features import encoder_features
    from pipeline.eval.algorithms.linear import linear_probe
    from pipeline.modalities.encoders import load_encoder

    featurize = encoder_features(load_encoder(encoder_file), torch.device("cpu"))
    (xtr, ytr), (xva, yva) = load_split(REPO / "data/shards", "train"), load_split(REPO / "data/shards", "val")
    train, val = (featurize(xtr), ytr.numpy()), (featurize(xva), yva.numpy())
    le = params.protocol_params["linear_eval"]
    with contextlib.redirect_stdout(sys.stderr):
        result = linear_probe(train, val, val, le.c_grid, le.max_iter)
    return max(result["val_top1_by_c"].values())


def main(args: argparse.Namespace) -> None:
    from pipeline.config import load_params, merge

    variants = json.loads(args.variants)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    print(f"method {args.method}, data/shards as committed; val top-1 of the train-split linear probe (best C)\n")
    print("| params changes | val top-1 | pretrain seconds |\n|---|---:|---:|")
    for update in variants:
        with tempfile.TemporaryDirectory() as tmp:
            raw = yaml.safe_load(yaml.safe_dump(base))  # a deep copy
            merge(raw, update)
            params_file = Path(tmp) / "params.yaml"
            params_file.write_text(yaml.safe_dump(raw))
            params = load_params(params_file)  # refuses a misspelt key before the run
            seconds = pretrain(params_file, args.method, Path(tmp) / "out")
            acc = val_probe(Path(tmp) / "out" / "encoder.pt", params)
        print(f"| {json.dumps(update) if update else '(params.yaml)'} | {100 * acc:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="?", default="[{}]")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--record", default="pretrain_recipe", help="results/<this>.md (keep another sweep's table)")
    cli = ap.parse_args()
    with recorded(cli.record):
        main(cli)
