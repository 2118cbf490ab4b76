"""Models that leave the pipeline: a trained encoder as the plain library model's weights.

    export_encoder(encoder, out_dir, card)  -> out_dir/model.safetensors + out_dir/model_card.json
    featurise_folder(encoder, folder)       -> features [N, D] float32, the image paths

``model.safetensors`` is the backbone's ``state_dict`` under the library's own names, without
the classifier, so it loads with ``strict=True`` into

    m = torchvision.models.resnet50(); m.fc = torch.nn.Identity(); m.load_state_dict(sd)
    m = timm.create_model("vit_small_patch16_224", num_classes=0, dynamic_img_size=True); m.load_state_dict(sd)

(``fc = Identity`` / ``num_classes=0`` are the libraries' own ways of asking for features; the
pipeline trains no classifier, so it exports none). The library model takes *normalised* 3-channel
input; ``model_card.json`` says how to make it (the pipeline's ``Encoder`` does it inside).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import UserError
from pipeline.modalities.encoders import encoder_input
from pipeline.models.encoder import Encoder
from pipeline.models.standard import IN_CHANNELS, RESNETS, STANDARD, VITS, library_state_dict

WEIGHTS, CARD = "model.safetensors", "model_card.json"


def load_snippet(arch: str) -> str:
    """Python that loads ``model.safetensors`` into the plain library model (the card's ``load``)."""
    if arch in RESNETS:
        make = f"import torchvision\nm = torchvision.models.{arch}()\nm.fc = torch.nn.Identity()"
    else:
        make = f"import timm\nm = timm.create_model({arch!r}, num_classes=0, dynamic_img_size=True)"
    return (f"import torch\nfrom safetensors.torch import load_file\n{make}\n"
            f"m.load_state_dict(load_file('{WEIGHTS}'), strict=True)\nm.eval()")


def input_contract(encoder: Encoder) -> dict:
    """What the exported library model expects, and what the pipeline's ``Encoder`` takes."""
    grey = encoder.channels == 1
    mean, std = encoder.mean.flatten().tolist(), encoder.std.flatten().tolist()
    return {
        "pipeline_encoder": "float [N, C, H, W] in [0, 1] (C as the shards: 1 grey or 3 RGB); normalised inside",
        "library_model": "float [N, 3, H, W] normalised: (x - mean) / std per channel, x in [0, 1]",
        "channels": IN_CHANNELS,
        "grey_repeated_to_rgb": grey,  # a grey image: normalise its one channel, repeat it 3 times
        "mean": mean * IN_CHANNELS if grey else mean,
        "std": std * IN_CHANNELS if grey else std,
        "value_range": [0.0, 1.0],
        "image_size": encoder.image_size,  # trained at; a ViT takes any multiple of its patch size
        "patch_size": VITS.get(encoder.params.arch),
        "resize": "short side to image_size (bicubic), centre crop image_size x image_size (ssl embed does this)",
        "features": f"[N, {encoder.feature_dim}] " + ("global-average-pooled" if encoder.params.arch in RESNETS else "class token"),
    }


def data_card(shards: Path | None) -> dict | None:
    """The shards the encoder trained on: the manifest's sha256 (it holds every shard's sha256) and counts."""
    manifest = shards / "manifest.json" if shards else None
    if manifest is None or not manifest.is_file():
        return None
    raw = manifest.read_bytes()
    m = json.loads(raw)
    return {"manifest_sha256": hashlib.sha256(raw).hexdigest(), "manifest": str(manifest),
            "source": m.get("source"), "counts": {k: v.get("count") for k, v in m.get("splits", {}).items()
                                                  if isinstance(v, dict)} or None}


def headline_metrics(metrics_dir: Path | None, method: str | None) -> dict:
    """``{protocol: {metric: value}}`` from ``metrics/<protocol>/<method>.json`` (the small headline files)."""
    if metrics_dir is None or method is None or not metrics_dir.is_dir():
        return {}
    return {f.parent.name: json.loads(f.read_text()) for f in sorted(metrics_dir.glob(f"*/{method}.json"))}


def check_exportable(encoder) -> None:
    arch = getattr(getattr(encoder, "params", None), "arch", None)
    if not isinstance(encoder, Encoder) or arch not in STANDARD:
        raise UserError(f"encoder.arch {arch!r} is this package's own model, which no library model takes: export "
                        f"needs one of {STANDARD} (set encoder.arch in params.yaml and re-run pretraining); "
                        "pipeline.modalities.encoders.load_encoder loads it in Python")


def export_encoder(encoder: Encoder, out_dir: Path, card: dict) -> tuple[Path, Path]:
    """Write ``out_dir/model.safetensors`` and ``out_dir/model_card.json`` (``card`` plus the
    architecture, input contract, load snippet and weights' sha256). Each file is written
    under a temporary name and renamed: nothing half-written."""
    from safetensors.torch import save_file

    check_exportable(encoder)
    out_dir.mkdir(parents=True, exist_ok=True)
    arch = encoder.params.arch
    weights, card_path = out_dir / WEIGHTS, out_dir / CARD
    tmp = out_dir / (WEIGHTS + ".tmp")
    save_file(library_state_dict(encoder.backbone), str(tmp), metadata={"format": "pt", "arch": arch})
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    library = "torchvision" if arch in RESNETS else "timm"
    full = {"arch": arch, "library": library, "library_version": _version(library), "weights": WEIGHTS,
            "weights_sha256": digest, "load": load_snippet(arch), "input": input_contract(encoder)} | card
    card_tmp = out_dir / (CARD + ".tmp")
    card_tmp.write_text(json.dumps(full, indent=2) + "\n")
    os.replace(tmp, weights)
    os.replace(card_tmp, card_path)
    return weights, card_path


def _version(library: str) -> str:
    return __import__(library).__version__


def image_paths(folder: Path) -> list[Path]:
    """Every image under ``folder`` (any depth, torchvision's image extensions), sorted."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of images")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
    if not paths:
        raise UserError(f"{folder} holds no images ({' '.join(IMG_EXTENSIONS)})")
    return paths


@torch.no_grad()
def featurise_folder(encoder: Encoder, folder: str | Path, batch_size: int = 256,
                     device: torch.device | str = "cpu") -> tuple[np.ndarray, list[str]]:
    """Features of every image under ``folder``: float32 ``[N, feature_dim]`` and the paths
    (relative to ``folder``) in the same order. Each image is made what the encoder trained on:
    grey or RGB as the shards, short side resized to ``encoder.image_size``, centre crop."""
    from pipeline.modalities.image.sources import FolderReader, load_image

    folder = Path(folder)
    paths = image_paths(folder)
    if encoder.image_size is None:
        raise UserError("this encoder does not record its image size (saved before it was stored): re-run pretraining")
    reader = FolderReader(tuple(str(p) for p in paths))
    encoder = encoder.to(device).eval()
    out = np.empty((len(paths), encoder.feature_dim), np.float32)
    for start in range(0, len(paths), batch_size):
        idx = range(start, min(start + batch_size, len(paths)))
        batch = np.stack([load_image(reader, i, encoder.image_size, encoder.channels, store_size=encoder.image_size) for i in idx])
        x = encoder_input(torch.from_numpy(batch).permute(0, 3, 1, 2).to(device), encoder)  # uint8 -> [0, 1]
        out[start:start + len(idx)] = encoder(x).float().cpu().numpy()
    return out, [str(p.relative_to(folder)) for p in paths]
