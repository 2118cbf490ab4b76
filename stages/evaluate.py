"""DVC stages `linear-eval@<method>`, `few-shot@<method>`, `transfer@<method>`,
`finetune@<method>`: one evaluation protocol on a pretrained encoder.

    python stages/evaluate.py linear-eval --encoder models/simclr/encoder.pt --shards data/shards --metrics ...
"""

from __future__ import annotations

import argparse

from pipeline.config import load_params
from pipeline.data.shards import load_split, read_manifest
from pipeline.errors import exit_on_user_error
from pipeline.eval.features import encoder_features
from pipeline.eval.finetune import finetune
from pipeline.eval.protocols import few_shot_eval, linear_and_knn, seed_everything, transfer_eval
from pipeline.models.encoder import load_encoder
from pipeline.provenance import write_json
from pipeline.train.loop import pick_device

PROTOCOLS = ("linear-eval", "few-shot", "transfer", "finetune")


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("protocol", choices=PROTOCOLS)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--shards", required=True)
    ap.add_argument("--metrics", required=True)
    args = ap.parse_args()
    params = load_params(args.params)
    seed_everything(params.seed)
    manifest = read_manifest(args.shards)
    device = pick_device()
    encoder = load_encoder(args.encoder)
    if args.protocol == "finetune":
        test = load_split(args.shards, "test")
        result = finetune(encoder, args.shards, manifest["splits"]["train"]["count"], len(manifest["classes"]), test,
                          params.finetune, params.seed, device)
    else:
        featurize = encoder_features(encoder, device)
        if args.protocol == "linear-eval":
            result = linear_and_knn(featurize, args.shards, params)
        elif args.protocol == "few-shot":
            result = few_shot_eval(featurize, args.shards, params)
        else:
            result = transfer_eval(featurize, manifest["image_size"], manifest["channels"], params)
    write_json(args.metrics, result)
    print(result)


if __name__ == "__main__":
    main()
