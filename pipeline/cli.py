"""``ssl``: the pipeline's command line outside DVC (installed by ``pip install .``; ``python -m pipeline.cli`` without).

    ssl info                                           methods, protocols, presets, encoder archs
    ssl export models/simclr/encoder.pt --out export/simclr
                                                       model.safetensors + model_card.json (docs/models.md)
    ssl embed FOLDER --encoder models/simclr/encoder.pt --out features.npz
                                                       features of every image under FOLDER

Bad input ends with one ``error:`` line and exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np

from pipeline.errors import UserError, exit_on_user_error


def info(args: argparse.Namespace) -> None:
    from pipeline.config import PRESETS
    from pipeline.registry import METHODS as methods, PROTOCOLS as protocols
    from pipeline.models.standard import STANDARD

    by_modality: dict[str, list[str]] = {}
    for name in methods.names():
        by_modality.setdefault(methods.get(name).modality, []).append(name)
    for modality, names in sorted(by_modality.items()):
        print(f"methods ({modality}): {' '.join(names)}")
    print(f"protocols: {' '.join(protocols.names())}")
    print(f"presets: {' '.join(sorted(p.stem for p in PRESETS.glob('*.yaml')))}  (python -m pipeline.presets NAME)")
    print(f"encoder.arch: resnet vit transformer (this package's); exportable: {' '.join(STANDARD)}")


def export(args: argparse.Namespace) -> None:
    from pipeline.export import check_exportable, data_card, export_encoder, headline_metrics
    from pipeline.modalities.encoders import load_encoder

    encoder = load_encoder(args.encoder)
    check_exportable(encoder)  # before anything is read or written
    method = args.method or Path(args.encoder).parent.name  # models/<method>/encoder.pt
    card = {"method": method, "encoder_file": str(args.encoder), "encoder_params": encoder.params.model_dump(exclude={"causal"}),
            "data": data_card(args.shards), "params": _params(args.params, method),
            "metrics": headline_metrics(args.metrics, method)}
    weights, card_path = export_encoder(encoder, args.out, card)
    print(f"wrote {weights} and {card_path}")


def _params(path: Path | None, method: str) -> dict | None:
    """The method's resolved training params (encoder, method section, optimiser) from params.yaml, if present."""
    if path is None or not path.is_file():
        return None
    import yaml

    from pipeline.config import parse_params

    params = parse_params(yaml.safe_load(path.read_text()), str(path))
    if method not in params.method_params:
        return None
    return {"seed": params.seed, "augment": params.augment.model_dump(), "method": params.method_params[method].model_dump(),
            "pretrain": params.pretrain_for(method).model_dump()}


def embed(args: argparse.Namespace) -> None:
    import torch

    from pipeline.export import featurise_folder
    from pipeline.modalities.encoders import load_encoder
    from pipeline.modalities.text.encoder import TextEncoder

    encoder = load_encoder(args.encoder)
    if isinstance(encoder, TextEncoder):
        raise UserError(f"{args.encoder} is a text encoder; ssl embed featurises images")
    if args.out.suffix != ".npz":
        raise UserError(f"--out {args.out}: give a .npz path (it holds 'features' and 'paths')")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    features, paths = featurise_folder(encoder, args.folder, args.batch_size, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, features=features, paths=np.array(paths))
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: features {features.shape[0]} x {features.shape[1]} (float32) and their paths")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ssl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="list methods, protocols, presets and encoder archs").set_defaults(run=info)
    ex = sub.add_parser("export", help="write a trained encoder as the library model's safetensors + a model card")
    ex.add_argument("encoder", type=Path, help="models/<method>/encoder.pt")
    ex.add_argument("--out", type=Path, required=True, help="folder for model.safetensors and model_card.json")
    ex.add_argument("--method", help="method name for the card (default: the encoder's folder name)")
    ex.add_argument("--shards", type=Path, default=Path("data/shards"), help="shard folder (its manifest.json's hash goes in the card)")
    ex.add_argument("--params", type=Path, default=Path("params.yaml"))
    ex.add_argument("--metrics", type=Path, default=Path("metrics"), help="headline metrics: <metrics>/<protocol>/<method>.json")
    ex.set_defaults(run=export)
    em = sub.add_parser("embed", help="features of every image under a folder -> .npz")
    em.add_argument("folder", type=Path)
    em.add_argument("--encoder", type=Path, required=True)
    em.add_argument("--out", type=Path, required=True, help=".npz with 'features' [N, D] float32 and 'paths'")
    em.add_argument("--batch-size", type=int, default=256)
    em.add_argument("--device", default="auto", help="auto (cuda if present), cpu or cuda")
    em.set_defaults(run=embed)
    return ap


@exit_on_user_error
def main() -> None:
    args = parser().parse_args(sys.argv[1:])
    args.run(args)


if __name__ == "__main__":
    main()
