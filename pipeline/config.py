"""Typed, validated params.

``load_params`` reads ``params.yaml`` and validates every section before any work starts:
an unknown key, a wrong type or an out-of-range value raises ``UserError`` naming the key
and what is allowed. Models are frozen, so a stage cannot change its params by accident.
Each method's own section (e.g. ``simclr:``) is validated by the params class that the
method registers (see ``pipeline.methods``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import UserError


class Strict(BaseModel):
    """Base: unknown keys rejected, no silent type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(Strict):
    """Where images come from and how they are split into shards."""

    source: Literal["fashion-mnist", "imagefolder", "torchvision"] = "fashion-mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    torchvision_name: Optional[str] = None  # e.g. CIFAR10, when source is torchvision
    download: bool = True  # torchvision/Fashion-MNIST download fallback (needs network)
    image_size: int = Field(28, ge=8, le=512)
    channels: Literal[1, 3] = 1
    pretrain_size: Optional[int] = Field(None, ge=1)  # None: every non-val train image
    train_size: Optional[int] = Field(None, ge=1)  # labelled images for the evaluations
    val_size: int = Field(5000, ge=1)
    test_size: Optional[int] = Field(None, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)  # for sources without a test split
    shard_size: int = Field(10000, ge=1)


class EncoderParams(Strict):
    """Backbone: a ResNet for small images."""

    arch: Literal["resnet"] = "resnet"
    layers: list[int] = Field(default_factory=lambda: [1, 1, 1, 1], min_length=1, max_length=6)
    width: int = Field(32, ge=4, le=512)
    stem_stride: Literal[1, 2] = 2

    @field_validator("layers")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("every stage needs at least 1 block")
        return v


class AugmentParams(Strict):
    """Random views for joint-embedding methods (applied batched on the training device)."""

    crop_scale: list[float] = Field(default_factory=lambda: [0.2, 1.0], min_length=2, max_length=2)
    crop_ratio: list[float] = Field(default_factory=lambda: [0.75, 1.3333], min_length=2, max_length=2)
    hflip: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0, le=1)
    contrast: float = Field(0.4, ge=0, le=1)
    saturation: float = Field(0.4, ge=0, le=1)  # RGB only
    grayscale_p: float = Field(0.2, ge=0, le=1)  # RGB only

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError("needs 0 < min <= max <= 1")
        return v

    @field_validator("crop_ratio")
    @classmethod
    def _ratio(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError("needs 0 < min <= max")
        return v


class OptimParams(Strict):
    """Optimizer and schedule shared by every training run (pretrain, finetune)."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(gt=0)  # base lr for a batch of 256; scaled linearly with batch size
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    warmup_epochs: float = Field(0.0, ge=0)


class PretrainParams(OptimParams):
    checkpoint_every: int = Field(1, ge=1)  # epochs between resumable checkpoints
    knn_every: int = Field(1, ge=1)  # epochs between kNN monitor evaluations
    knn_bank_size: int = Field(5000, ge=10)  # labelled train images in the monitor's bank
    knn_query_size: int = Field(2000, ge=10)  # val images the monitor classifies
    shuffle_buffer: int = Field(5000, ge=1)
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU


class KnnParams(Strict):
    ks: list[int] = Field(default_factory=lambda: [20, 200], min_length=1)
    temperature: float = Field(0.07, gt=0)


class LinearParams(Strict):
    """Logistic regression (L-BFGS) on frozen features, L2 strength swept on val."""

    c_grid: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0], min_length=1)
    max_iter: int = Field(300, ge=10)


class FinetuneParams(OptimParams):
    encoder_lr_mult: float = Field(0.1, ge=0, le=1)  # encoder lr = lr * this


class FewShotParams(Strict):
    ways: int = Field(5, ge=2)
    shots: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    queries: int = Field(15, ge=1)
    episodes: int = Field(600, ge=1)


class TransferParams(Strict):
    datasets: list[Literal["digits", "mnist-sample", "cifar10", "cifar100"]] = Field(
        default_factory=lambda: ["digits", "mnist-sample"], min_length=1
    )
    test_fraction: float = Field(0.3, gt=0, lt=1)
    root: str = "data/transfer"  # torchvision download root for networked presets


class Params(Strict):
    """All of params.yaml except the per-method sections."""

    seed: int = Field(0, ge=0)
    methods: list[str] = Field(min_length=1)
    data: DataParams
    encoder: EncoderParams
    augment: AugmentParams
    pretrain: PretrainParams
    knn: KnnParams
    linear_eval: LinearParams
    finetune: FinetuneParams
    few_shot: FewShotParams
    transfer: TransferParams
    # filled by parse_params from the per-method sections:
    method_params: dict[str, Any] = Field(default_factory=dict)
    method_pretrain: dict[str, PretrainParams] = Field(default_factory=dict)
    method_encoder: dict[str, EncoderParams] = Field(default_factory=dict)

    def pretrain_for(self, method: str) -> PretrainParams:
        """The pretrain section with the method's own ``pretrain:`` overrides applied."""
        return self.method_pretrain.get(method, self.pretrain)

    def encoder_for(self, method: str) -> EncoderParams:
        """The encoder section with the method's own ``encoder:`` overrides applied."""
        return self.method_encoder.get(method, self.encoder)


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see params.yaml in the repository for valid keys)"
        elif "input" in e and e["type"] != "missing":
            msg = f"{msg} (got {e['input']!r})"
        lines.append(f"  {key}: {msg}")
    return f"invalid params in {source}:\n" + "\n".join(lines)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params dict; raises ``UserError`` listing every problem."""
    from pipeline.methods import registry  # late import: methods import config

    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    method_sections = {name: raw.pop(name) for name in list(raw) if name in registry.names()}
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(_describe(err, source)) from None
    unknown = [m for m in params.methods if m not in registry.names()]
    if unknown:
        raise UserError(
            f"{source}: methods: unknown method(s) {unknown}; valid methods are {registry.names()}"
        )
    validated, pretrain, encoder = {}, {}, {}
    for name in registry.names():
        section = dict(method_sections.get(name) or {})
        # A method may override shared sections, e.g. MAE's AdamW recipe or its ViT encoder.
        shared = {"pretrain": (params.pretrain, pretrain), "encoder": (params.encoder, encoder)}
        try:
            for key, (base, out) in shared.items():
                if key in section:
                    override = section.pop(key)
                    if not isinstance(override, dict):
                        raise UserError(f"{source}: {name}.{key} must be a mapping of {key} keys to override")
                    out[name] = type(base).model_validate(base.model_dump() | override)
            validated[name] = registry.get(name).Params.model_validate(section)
        except ValidationError as err:
            raise UserError(_describe(err, f"{source} (section '{name}')")) from None
    return params.model_copy(update={"method_params": validated, "method_pretrain": pretrain, "method_encoder": encoder})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run from the repository root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}") from None
    return parse_params(raw, str(path))
