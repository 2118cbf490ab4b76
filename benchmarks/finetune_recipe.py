"""Fine-tuning recipes compared on val, never on test: a pretrained encoder (by default the
image SimCLR one, `models/simclr/encoder.pt`, from `dvc repro`) fine-tuned on the train split
alone, top-1 on the val split, for each variant of the `finetune:` section.

    python benchmarks/finetune_recipe.py '[{}, {"encoder_lr_mult": 0.1}, {"epochs": 6}]'
    python benchmarks/finetune_recipe.py --preset text --encoder text/models/mlm/encoder.pt '[{}, {"length_group": 1}]'

Each argument entry is a dict of `finetune` keys replaced for that run ({} = params.yaml's,
with the preset merged over it). With `--rounds N` the variants run round by round
(interleaved) and the table gives the median seconds; top-1 is the same in every round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from record import recorded  # benchmarks/record.py: keeps the printed tables in results/

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(args: argparse.Namespace) -> None:
    from pipeline.config import load_params
    from pipeline.shards.manifest import read_manifest
    from pipeline.eval.algorithms.finetune import top1, train_classifier
    from pipeline.eval.protocol import EvalContext
    from pipeline.modalities.encoders import load_encoder

    variants = json.loads(args.variants)
    params = load_params(REPO / "params.yaml", preset=args.preset)
    shards = REPO / ("text/data/shards" if args.preset == "text" else "data/shards")
    n_classes = len(read_manifest(shards)["classes"])
    cpu = torch.device("cpu")
    # the stage's data path: images streamed from the shards, text from memory
    ctx = EvalContext("recipe", None, True, str(shards), read_manifest(shards), params, cpu)
    seconds: dict[int, list[float]] = {i: [] for i in range(len(variants))}
    accuracy: dict[int, float] = {}
    for _ in range(args.rounds):
        for i, update in enumerate(variants):
            cfg = params.protocol_params["finetune"].model_copy(update=update)
            t0 = time.time()
            encoder = load_encoder(REPO / args.encoder).train()
            with contextlib.redirect_stdout(sys.stderr):  # the training log: progress, not the result table
                train = ctx.training_set(("train",), cfg.shuffle_buffer, cfg.length_group)
                model, _ = train_classifier(encoder, train, n_classes, cfg, cfg.encoder_lr_mult, params.seed, cpu, "finetune")
            seconds[i].append(time.time() - t0)
            accuracy[i] = top1(model, ctx.batches("val"), cpu)
    print(f"{args.encoder}, {args.rounds} round(s), median seconds\n")
    print("| finetune changes | val top-1 | seconds |\n|---|---:|---:|")
    for i, update in enumerate(variants):
        print(f"| {json.dumps(update) if update else '(params.yaml)'} | {100 * accuracy[i]:.1f} | "
              f"{statistics.median(seconds[i]):.0f} |", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="?", default="[{}]")
    ap.add_argument("--preset", default=None, help="e.g. text (presets/text.yaml over params.yaml)")
    ap.add_argument("--encoder", default="models/simclr/encoder.pt", help="relative to the repository")
    ap.add_argument("--rounds", type=int, default=1)
    cli = ap.parse_args()
    with recorded("finetune_recipe" if cli.preset is None else f"finetune_recipe_{cli.preset}"):
        main(cli)
