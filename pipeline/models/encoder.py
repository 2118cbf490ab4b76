"""The encoder every stage shares: input normalisation + backbone.

Normalisation lives inside the module (as buffers) so a saved encoder carries its own
dataset statistics: evaluations feed plain [0, 1] images and cannot get it wrong.

The backbone is ``params.arch``: a small ResNet, or a small ViT (``pipeline.models.vit``),
whose token-level pieces masked image modeling reaches through ``encoder.backbone``; or one
of the field's standard backbones (``pipeline.models.standard``: torchvision's resnet18/50,
timm's ViT-S/16 and ViT-B/16), whose weights leave the pipeline (``pipeline.export``). A ViT's
grid is that of the data's image size (stored with the encoder); other sizes its patch size
divides get resampled positions (multi-crop).

Text (``manifest["modality"] == "text"``, ``encoder.arch: transformer``) gets a ``TextEncoder``:
packed int64 ``[N, 2, L]`` (token ids, attention) -> features ``[N, D]``; no normalisation.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pipeline.config import EncoderParams
from pipeline.modalities.image.views import to_float
from pipeline.errors import UserError
from pipeline.models.resnet import SmallResNet
from pipeline.models.standard import IN_CHANNELS, RESNETS, STANDARD, VITS, TimmViT, torchvision_resnet
from pipeline.modalities.text.encoder import TextTransformer
from pipeline.models.vit import ViT
from pipeline.outputs import save_torch


class Encoder(nn.Module):
    """float ``[N, C, H, W]`` in [0, 1] -> features ``[N, feature_dim]``."""

    def __init__(self, params: EncoderParams, channels: int, mean: list[float], std: list[float], image_size: int | None = None):
        super().__init__()
        self.params = params
        self.channels = channels
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).clamp(min=1e-3).view(1, -1, 1, 1))
        # the library backbones take 3 channels: a grey channel is repeated after normalising
        self.in_channels = channels
        if params.arch in STANDARD:
            self.in_channels = IN_CHANNELS
            if channels not in (1, IN_CHANNELS):
                raise UserError(f"encoder.arch {params.arch!r} takes 1 or 3 channels, the shards hold {channels}")
        if params.arch in ("vit", *VITS):
            if image_size is None:
                raise UserError(f"encoder.arch {params.arch!r} needs the image size (data.image_size) to build its position table")
            patch = params.patch_size if params.arch == "vit" else VITS[params.arch]
            if image_size % patch:
                key = "encoder.patch_size" if params.arch == "vit" else f"encoder.arch {params.arch!r}'s patch size"
                raise UserError(
                    f"{key} ({patch}) must divide data.image_size ({image_size}): "
                    f"pick a patch size that divides {image_size} or resize the images (data.image_size)"
                )
        if params.arch == "vit":
            self.backbone = ViT(image_size, channels, params.patch_size, params.dim, params.depth, params.heads,
                                params.mlp_ratio, params.pos_embed, params.pool)
        elif params.arch in VITS:
            self.backbone = TimmViT(params.arch, image_size)
        elif params.arch in RESNETS:
            self.backbone = torchvision_resnet(params.arch)
        else:
            self.backbone = SmallResNet(channels, list(params.layers), params.width, params.stem_stride)
        self.feature_dim = self.backbone.feature_dim

    @property
    def has_patch_tokens(self) -> bool:
        """Whether ``backbone`` is a ViT with the token interface of ``pipeline.models.vit.ViT``
        (``embed``, ``encode``, ``encode_subset``, ``patch_pos``, ``grid``...): masked image modeling needs it."""
        return isinstance(self.backbone, (ViT, TimmViT))

    def check_input_size(self, size: int, key: str) -> None:
        """Refuse, naming ``key``, an input size this encoder cannot take: a ViT takes any size its
        patch size divides (positions are resampled), a ResNet any size."""
        patch = getattr(self.backbone, "patch_size", 1)
        if self.has_patch_tokens and size % patch:
            fits = sorted({max(patch, size // patch * patch), (size // patch + 1) * patch})
            raise UserError(f"{key}: {size} px does not split into the ViT's {patch} px patches "
                            f"(encoder.arch {self.params.arch!r}): use a multiple of {patch}, e.g. {' or '.join(map(str, fits))}")

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` images ``[N, C, H, W]`` -> the backbone's input ``[N, in_channels, H, W]``
        (dataset mean/std per channel; a grey channel repeated for a 3-channel library backbone)."""
        x = (x - self.mean) / self.std
        return x.expand(-1, self.in_channels, -1, -1) if x.shape[1] != self.in_channels else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalise(x))


def encoder_input(x: torch.Tensor) -> torch.Tensor:
    """What an encoder takes from a batch as the readers return it: uint8 images
    ``[N, C, H, W]`` -> float in [0, 1]; packed text (int64 ``[N, 2, L]``) unchanged."""
    return to_float(x) if x.dtype == torch.uint8 else x


def text_lengths(x: torch.Tensor) -> torch.Tensor:
    """Packed int64 text ``[N, 2, L]`` -> real tokens per entry ``[N]`` (the attention row's sum)."""
    return x[:, 1].sum(1)


def unpack_text(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed int64 ``[N, 2, L]`` -> ``(ids [N, T], attention [N, T])`` with the padding columns
    beyond the longest real row cut off (T <= L), so compute follows the real lengths and not
    the shards' fixed ``max_length``. Rows are right-padded, so no real token is lost."""
    longest = max(int(text_lengths(x).max()), 1) if len(x) else 1  # one host sync per batch
    return x[:, 0, :longest], x[:, 1, :longest]


class TextEncoder(nn.Module):
    """Packed int64 ``[N, 2, L]`` -> features ``[N, D]``: a ``TextTransformer`` (bidirectional or
    causal, ``params.causal``) and its pooling (mean over real tokens, or the last real
    token's state when causal). ``backbone`` gives the methods its hidden states and tied LM head."""

    def __init__(self, params: EncoderParams, vocab_size: int, max_length: int):
        super().__init__()
        self.params = params
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.backbone = TextTransformer(vocab_size, params.dim, params.depth, params.heads, max_length, params.causal,
                                        mlp_ratio=params.mlp_ratio)
        self.feature_dim = params.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(*unpack_text(x))


def build_encoder(params: EncoderParams, manifest: dict) -> Encoder | TextEncoder:
    text = manifest.get("modality") == "text"
    if text != (params.arch == "transformer"):
        data, fits = ("text", "'transformer'") if text else ("images", "'resnet' or 'vit'")
        raise UserError(f"encoder.arch {params.arch!r} cannot encode {data}: these shards hold {data}, which need "
                        f"encoder.arch {fits} (or the method's own `encoder:` override in params.yaml)")
    if text:
        return TextEncoder(params, manifest["vocab_size"], manifest["max_length"])
    return Encoder(params, manifest["channels"], manifest["mean"], manifest["std"], manifest.get("image_size"))


def save_encoder(encoder: Encoder | TextEncoder, path: Path) -> None:
    """Write the encoder: its architecture, input statistics and weights, nothing volatile
    (no times, hosts or git SHAs: those go to provenance.json), so the same weights always
    give the same bytes and DVC leaves the downstream stages cached."""
    if isinstance(encoder, TextEncoder):
        save_torch({"modality": "text", "params": encoder.params.model_dump(), "vocab_size": encoder.vocab_size,
                    "max_length": encoder.max_length, "state_dict": encoder.state_dict()}, path)
        return
    # image encoders: exactly the keys they had before text existed (``causal`` is a text key),
    # so their bytes, and DVC's caches downstream, do not change
    save_torch(
        {"params": encoder.params.model_dump(exclude={"causal"}), "channels": encoder.channels,
         "mean": encoder.mean.flatten().tolist(), "std": encoder.std.flatten().tolist(), "image_size": encoder.image_size,
         "state_dict": encoder.state_dict()},
        path,
    )


def load_encoder(path: str | Path, manifest: dict | None = None, shards: str | Path = "the shards") -> Encoder | TextEncoder:
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
        if blob.get("modality") == "text":
            enc = TextEncoder(EncoderParams.model_validate(blob["params"]), blob["vocab_size"], blob["max_length"])
        else:
            # Encoders saved before the ViT arch existed have no image_size (a ResNet needs none).
            enc = Encoder(EncoderParams.model_validate(blob["params"]), blob["channels"], blob["mean"], blob["std"],
                          blob.get("image_size"))
        enc.load_state_dict(blob["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:  # pydantic's ValidationError is a ValueError
        first = str(err).strip().splitlines()[0]
        raise UserError(f"encoder {path} does not match the architecture it names ({first}); {_REPRETRAIN}") from None
    return enc.eval()


_REPRETRAIN = "re-run pretraining ('dvc repro -f pretrain@<method>') or point --encoder at an encoder.pt the pretrain stage wrote"
_KEYS = {"image": ("params", "channels", "mean", "std", "state_dict"), "text": ("params", "vocab_size", "max_length", "state_dict")}


def _check_blob(blob, path: Path) -> None:
    """``blob`` has the keys ``save_encoder`` writes, of the right kinds."""
    if not isinstance(blob, dict):
        raise UserError(f"encoder {path} holds a {type(blob).__name__}, not an encoder the pretrain stage saved; {_REPRETRAIN}")
    modality = "text" if blob.get("modality") == "text" else "image"
    missing = [k for k in _KEYS[modality] if k not in blob]
    if missing:
        hint = " (it looks like a training checkpoint: use encoder.pt)" if "fingerprint" in blob else ""
        raise UserError(f"encoder {path} has no {', '.join(repr(k) for k in missing)}{hint}; {_REPRETRAIN}")
    if not isinstance(blob["params"], dict) or not isinstance(blob["state_dict"], dict):
        raise UserError(f"encoder {path}: 'params' and 'state_dict' must be mappings; {_REPRETRAIN}")


# The largest difference in a normalisation statistic between an encoder and the shards it is
# evaluated on: subsets of one dataset differ by < 0.005 (Fashion-MNIST's mean over 20k or 55k
# images), other datasets by far more (MNIST's mean is 0.13, Fashion-MNIST's 0.29).
STATS_TOLERANCE = 0.02


def check_fits(blob: dict, manifest: dict, path: Path, shards: str | Path) -> None:
    """Refuse an encoder (``blob``, as saved) that cannot encode the shards of ``manifest``:
    another modality, channel count, image size, normalisation, vocabulary or text length."""
    data = "text" if manifest.get("modality") == "text" else "image"
    modality = "text" if blob.get("modality") == "text" else "image"
    fix = f"evaluate it on the shards it was pretrained on, or pretrain on {shards} first ('dvc repro')"
    if modality != data:
        raise UserError(f"encoder {path} encodes {modality} but {shards} holds {data}; {fix}")
    if data == "text":
        if blob["vocab_size"] != manifest["vocab_size"]:
            raise UserError(f"encoder {path} has a {blob['vocab_size']}-token vocabulary but the tokenizer of {shards} has "
                            f"{manifest['vocab_size']}; {fix}")
        if blob["max_length"] < manifest["max_length"]:
            raise UserError(f"encoder {path} reads at most {blob['max_length']} tokens but {shards} holds entries of up to "
                            f"{manifest['max_length']}; {fix}")
        return
    if blob["channels"] != manifest["channels"]:
        raise UserError(f"encoder {path} takes {blob['channels']}-channel images but {shards} holds {manifest['channels']}-channel "
                        f"images; {fix}")
    size = blob.get("image_size")
    if size is not None and size != manifest.get("image_size"):
        raise UserError(f"encoder {path} was trained on {size}x{size} images but {shards} holds {manifest.get('image_size')}x"
                        f"{manifest.get('image_size')}; {fix}")
    for key in ("mean", "std"):
        ours, theirs = blob[key], manifest.get(key) or []
        if len(ours) != len(theirs) or any(not abs(a - b) <= STATS_TOLERANCE for a, b in zip(ours, theirs)):
            raise UserError(f"encoder {path} normalises with {key} {[round(v, 4) for v in ours]} but the images of {shards} have "
                            f"{key} {theirs} (another dataset); {fix}")
