"""Fine-tuning recipes compared on val, never on test: the default SimCLR encoder
(`models/simclr/encoder.pt`, from `dvc repro`) fine-tuned on the train split alone, top-1 on
the val split, for each variant of params.yaml's `finetune:` section.

    python benchmarks/finetune_recipe.py '[{}, {"encoder_lr_mult": 0.1}, {"epochs": 6}]'

Each argument entry is a dict of `finetune` keys replaced for that run ({} = params.yaml's).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from pipeline.config import load_params
    from pipeline.data.shards import load_split, read_manifest
    from pipeline.eval.finetune import top1, train_classifier
    from pipeline.models.encoder import load_encoder

    variants = json.loads(sys.argv[1]) if len(sys.argv) > 1 else [{}]
    params = load_params(REPO / "params.yaml")
    shards = REPO / "data" / "shards"
    n_classes = len(read_manifest(shards)["classes"])
    train, val = load_split(shards, "train"), load_split(shards, "val")
    print("| finetune changes | val top-1 | seconds |\n|---|---:|---:|")
    for update in variants:
        cfg = params.finetune.model_copy(update=update)
        t0 = time.time()
        encoder = load_encoder(REPO / "models" / "simclr" / "encoder.pt").train()
        with contextlib.redirect_stdout(sys.stderr):  # the training log: progress, not the result table
            model, _ = train_classifier(encoder, *train, n_classes, cfg, cfg.encoder_lr_mult, params.seed, torch.device("cpu"),
                                        "finetune")
        print(f"| {json.dumps(update) if update else '(params.yaml)'} | {100 * top1(model, val, torch.device('cpu')):.1f} | "
              f"{time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    with recorded("finetune_recipe"):
        main()
