"""Build, save and load an encoder of any modality: the file format is the modality's
(``Modality.encoder_payload``), the checks every encoder file gets are here.

An encoder file holds its architecture, input statistics and weights, nothing volatile (no
times, hosts or git SHAs: those go to provenance.json), so the same weights always give the
same bytes and DVC leaves the downstream stages cached. Image encoders hold exactly the keys
they had before text existed (no "modality" key), so their bytes did not change.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserError
from pipeline.modalities.base import modality_of, modality_of_blob, modality_of_encoder
from pipeline.outputs import save_torch


def build_encoder(params, manifest: dict) -> nn.Module:
    """A fresh encoder of section ``params`` (``EncoderParams``) for the shards of ``manifest``;
    an architecture of another modality is refused."""
    modality = modality_of(manifest)
    if params.arch not in modality.encoder_archs:
        data = modality.content
        raise UserError(f"encoder.arch {params.arch!r} cannot encode {data}: these shards hold {data}, which need "
                        f"encoder.arch {modality.arch_hint} (or the method's own `encoder:` override in params.yaml)")
    return modality.build_encoder(params, manifest)


def encoder_input(x: torch.Tensor, encoder: nn.Module) -> torch.Tensor:
    """What ``encoder`` takes from a batch as the readers return it (images: uint8 -> [0, 1] floats)."""
    return modality_of_encoder(encoder).encoder_input(x)


def save_encoder(encoder: nn.Module, path: Path) -> None:
    """Write the encoder as its modality describes it (``Modality.encoder_payload``)."""
    save_torch(modality_of_encoder(encoder).encoder_payload(encoder), path)


_REPRETRAIN = "re-run pretraining ('dvc repro -f pretrain@<method>') or point --encoder at an encoder.pt the pretrain stage wrote"


def load_encoder(path: str | Path, manifest: dict | None = None, shards: str | Path = "the shards") -> nn.Module:
    """The encoder saved at ``path``; with ``manifest``, refused unless it fits those shards
    (``check_fits``). A file that is not an encoder ``save_encoder`` wrote (a pickled list, a
    checkpoint, keys missing, weights of another shape) is a ``UserError``, never a traceback."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"encoder {path} not found; run the pretrain stage first (dvc repro)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise UserError(f"encoder {path} cannot be read ({err}); re-run pretraining") from None
    _check_blob(blob, path)
    if manifest is not None:
        check_fits(blob, manifest, path, shards)
    try:
        enc = modality_of_blob(blob).encoder_from_payload(blob)
        enc.load_state_dict(blob["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:  # pydantic's ValidationError is a ValueError
        first = str(err).strip().splitlines()[0]
        raise UserError(f"encoder {path} does not match the architecture it names ({first}); {_REPRETRAIN}") from None
    return enc.eval()


def _check_blob(blob, path: Path) -> None:
    """``blob`` has the keys ``save_encoder`` writes, of the right kinds."""
    if not isinstance(blob, dict):
        raise UserError(f"encoder {path} holds a {type(blob).__name__}, not an encoder the pretrain stage saved; {_REPRETRAIN}")
    modality = modality_of_blob(blob)
    missing = [k for k in modality.payload_keys if k not in blob]
    if missing:
        hint = " (it looks like a training checkpoint: use encoder.pt)" if "fingerprint" in blob else ""
        raise UserError(f"encoder {path} has no {', '.join(repr(k) for k in missing)}{hint}; {_REPRETRAIN}")
    if not isinstance(blob["params"], dict) or not isinstance(blob["state_dict"], dict):
        raise UserError(f"encoder {path}: 'params' and 'state_dict' must be mappings; {_REPRETRAIN}")


def check_fits(blob: dict, manifest: dict, path: Path, shards: str | Path) -> None:
    """Refuse an encoder (``blob``, as saved) that cannot encode the shards of ``manifest``:
    another modality, or what the modality checks (channels, image size, normalisation;
    vocabulary, text length)."""
    data, modality = modality_of(manifest), modality_of_blob(blob)
    fix = f"evaluate it on the shards it was pretrained on, or pretrain on {shards} first ('dvc repro')"
    if modality is not data:
        raise UserError(f"encoder {path} encodes {modality.name} but {shards} holds {data.name}; {fix}")
    modality.check_fits(blob, manifest, path, shards, fix)
