"""Typed, validated params.

``load_params`` reads ``params.yaml`` and validates every section before any work starts:
an unknown key, a wrong type or an out-of-range value raises ``UserError`` naming the key
and what is allowed. Models are frozen, so a stage cannot change its params by accident.
Each method's own section (e.g. ``simclr:``) is validated by the params class that the
method registers (see ``pipeline.methods``), each protocol's (e.g. ``knn:``) by its
protocol's (``pipeline/eval/protocols/<name>.py``): read it as ``params.protocol_params[name]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import UserError
from pipeline.registry import METHODS, MODALITIES, PROTOCOLS, SOURCES


class Strict(BaseModel):
    """Base: unknown keys rejected, no silent type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(Strict):
    """Where images come from and how they are split into shards."""

    # a registered data source (pipeline/modalities/<modality>/: fashion-mnist, imagefolder, torchvision;
    # fortunes: text, section text); its modality decides how the shards are written and read
    source: str = "fashion-mnist"
    root: str = "/usr/share/datasets/fashion-mnist"
    torchvision_name: Optional[str] = None  # e.g. CIFAR10, when source is torchvision
    download: bool = False  # torchvision/Fashion-MNIST download fallback (needs network)
    image_size: int = Field(28, ge=8, le=512)
    channels: Literal[1, 3] = 1
    pretrain_size: Optional[int] = Field(20000, ge=1)  # None: every non-val train image
    train_size: Optional[int] = Field(10000, ge=1)  # labelled images for the evaluations (None: all)
    val_size: int = Field(5000, ge=1)
    test_size: Optional[int] = Field(None, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)  # for sources without a test split
    shard_size: int = Field(10000, ge=1)
    # Stored size: None keeps image_size (every image resized to image_size x image_size,
    # as before); set, the short side is resized to store_size and the centre cropped to
    # store_size x store_size (no distortion): the shards' and the encoder's image size.
    store_size: Optional[int] = Field(None, ge=8, le=1024)
    # With store_size: store the short side at store_size with the aspect ratio kept (no crop;
    # ImageNet's photos keep their edges); readers decode the centre square. False: as above.
    store_aspect: bool = False
    image_format: Literal["png", "jpeg"] = "png"  # sample encoding in the shards
    jpeg_quality: int = Field(90, ge=1, le=100)  # with image_format jpeg
    # Processes decoding/resizing/encoding (None: os.cpu_count(), at most 8); the output
    # bytes are the same for any count, so it is left out of the manifest.
    workers: Optional[int] = Field(None, ge=1, le=64)
    # Virtual streams (pipeline/shards/streams.py): 1 (every rank reads the one seeded stream);
    # S > 1: each split in a multiple of S shards, and each rank x loader worker reads only
    # its streams' shards (S a multiple of the process count; e.g. 64 or 256 at ImageNet scale).
    streams: int = Field(1, ge=1, le=4096)
    # Unlabelled images (any tree of files) that make the pretrain split instead of the labelled
    # source's pool; the labelled source (data.root) still gives train/val/test. None: off.
    pretrain_root: Optional[str] = None
    # An image file with more pixels is refused from its header (a decompression bomb); PIL's
    # own limit by default. None: no limit. Left out of the manifest (no accepted image changes).
    max_image_pixels: Optional[int] = Field(89478485, ge=1)


    @field_validator("source")
    @classmethod
    def _registered(cls, v: str) -> str:
        if v not in SOURCES:
            raise ValueError(f"unknown data source; valid: {', '.join(SOURCES.names())}")
        return v


class EncoderParams(Strict):
    """Backbone: a ResNet for small images, or a small ViT (torchvision's) for masked image
    modeling (MAE, BEiT). Keys of the other arch are ignored."""

    arch: Literal["resnet", "vit", "transformer", "resnet18", "resnet50", "vit_small_patch16_224",
                  "vit_base_patch16_224"] = "resnet"  # transformer: text (dim, depth, heads, mlp_ratio, causal)
    # resnet18/resnet50: torchvision's (ImageNet stem); vit_*_patch16_224: timm's (class-token features,
    # patch 16); none of the keys below apply to them. Their weights export (pipeline/export.py)
    # resnet
    layers: list[int] = Field(default_factory=lambda: [1, 1, 1, 1], min_length=1, max_length=6)
    width: int = Field(32, ge=4, le=512)
    stem_stride: Literal[1, 2] = 2
    # vit: smaller than ViT-Tiny (192-d, 12 blocks, 3 heads) so a 2-core CPU trains it at
    # 28x28 (patch 4 -> 7x7 = 49 tokens): 128-d, 4 blocks, 4 heads of 32 dims, MLP 4x.
    # data.image_size must be a multiple of patch_size; that is checked when the encoder is
    # built (the size comes from the shards).
    patch_size: int = Field(4, ge=1, le=64)
    dim: int = Field(128, ge=8, le=4096)
    depth: int = Field(4, ge=1, le=48)
    heads: int = Field(4, ge=1, le=64)
    mlp_ratio: float = Field(4.0, gt=0, le=16)
    pos_embed: Literal["sincos", "learned"] = "sincos"  # fixed 2-D sin-cos as MAE / MoCo v3, or learned (torchvision)
    pool: Literal["mean", "cls"] = "mean"  # features: mean of the patch tokens, or the class token
    # transformer (text): causal self-attention (a GPT-style decoder) or bidirectional (BERT-style)
    causal: bool = False

    @field_validator("layers")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v):
            raise ValueError("every stage needs at least 1 block")
        return v

    @model_validator(mode="after")
    def _vit_dims(self) -> "EncoderParams":
        if self.arch in ("vit", "transformer"):
            if self.dim % self.heads:
                raise ValueError(f"encoder.dim ({self.dim}) must be divisible by encoder.heads ({self.heads})")
            if self.arch == "vit" and self.pos_embed == "sincos" and self.dim % 4:
                raise ValueError(f"encoder.dim ({self.dim}) must be divisible by 4 for encoder.pos_embed 'sincos'")
        return self


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
    hue: float = Field(0.1, ge=0, le=0.5)  # RGB only; shift uniform in [-hue, hue] turns
    # per view (view index picks the entry, the last one for views beyond); ImageNet recipes:
    # BYOL blur [1.0, 0.1] solarize [0.0, 0.2]; SimCLR blur [0.5]; DINO globals as BYOL, locals 0.5
    blur_p: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    solarize_p: list[float] = Field(default_factory=lambda: [0.0], min_length=1)

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

    @field_validator("blur_p", "solarize_p")
    @classmethod
    def _probs(cls, v: list[float]) -> list[float]:
        if not all(0 <= p <= 1 for p in v):
            raise ValueError("probabilities must be in [0, 1]")
        return v


class OptimParams(Strict):
    """Optimizer and schedule shared by every training run (pretrain, finetune)."""

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=2)
    optimizer: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = Field(gt=0)  # base lr: the lr at a global batch of 256, scaled to the real batch by lr_scaling
    # linear: lr x B/256 (Goyal et al. 2017; SimCLR/BYOL with LARS, MoCo/SimSiam with SGD, DINO/MAE with AdamW);
    # sqrt: lr x sqrt(B/256) (SimCLR App. B.1, for small batches and short schedules). pipeline/train/optim.py
    lr_scaling: Literal["linear", "sqrt"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd and lars
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)  # adamw
    lars_eta: float = Field(0.001, gt=0)  # lars trust coefficient (SimCLR/BYOL/Barlow Twins: 0.001)
    grad_clip: float = Field(0.0, ge=0)  # max global gradient norm before each step; 0: no clipping
    warmup_epochs: float = Field(0.0, ge=0)


class PretrainParams(OptimParams):
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    checkpoint_every: int = Field(1, ge=1)  # epochs between resumable checkpoints
    checkpoint_every_steps: int = Field(0, ge=0)  # optimizer steps between checkpoints inside an epoch; 0: off
    knn_every: int = Field(1, ge=1)  # epochs between kNN monitor evaluations
    knn_bank_size: int = Field(5000, ge=10)  # labelled train images in the monitor's bank
    knn_query_size: int = Field(2000, ge=10)  # val images the monitor classifies
    knn_k: int = Field(20, ge=1)  # the monitor's k (a smaller bank votes over all of it)
    prepare_images: int = Field(5000, ge=1)  # pretrain images a method's prepare() sees (BEiT's tokenizer)
    shuffle_buffer: int = Field(5000, ge=1)
    # DataLoader processes decoding the batches (None: none when training on a CPU, the cores available,
    # at most 8, with a GPU: pipeline.data.loader.loader_workers; 0: in the training process); any count
    # gives the same batches in the same order
    loader_workers: Optional[int] = Field(None, ge=0, le=64)
    # auto: bfloat16 autocast on a GPU that has it, float16 + gradient scaler on one that does not,
    # float32 on the CPU; bf16 | fp16 | fp32 force one (pipeline/train/device.py)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: Literal["auto", "cuda", "cpu"] = "auto"  # auto: CUDA when usable (and says so); cuda: fail at once without it
    compile: bool = False  # torch.compile the encoder (benchmarks/compile.py measures it)
    # Processes on this node: above 1, the stage starts itself under torchrun (--standalone);
    # several nodes are launched by hand with torchrun (README)
    nproc_per_node: int = Field(1, ge=1)
    # SyncBatchNorm under DDP: auto = on CUDA only (torch's SyncBatchNorm does not run on CPU)
    sync_batchnorm: Literal["auto"] | bool = "auto"


class Params(Strict):
    """All of params.yaml except the per-method and per-protocol sections."""

    seed: int = Field(0, ge=0)
    methods: list[str] = Field(min_length=1)
    protocols: list[str] = Field(min_length=1)  # evaluation protocols run on every method and baseline
    baselines: list[str] = Field(min_length=0)  # raw_pixels, random_init, random_init_<method>
    data: DataParams
    encoder: EncoderParams
    augment: AugmentParams
    pretrain: PretrainParams
    # filled by parse_params from the per-method and per-protocol sections:
    method_params: dict[str, Any] = Field(default_factory=dict)
    method_pretrain: dict[str, PretrainParams] = Field(default_factory=dict)
    method_encoder: dict[str, EncoderParams] = Field(default_factory=dict)
    # every registered protocol's section, validated by its own Params (pipeline/eval/protocols/<name>.py),
    # whether or not it is in ``protocols`` (the pretrain stage's kNN monitor reads knn's temperature)
    protocol_params: dict[str, Any] = Field(default_factory=dict)
    modality_params: dict[str, Any] = Field(default_factory=dict)  # a modality's own section (text:), by modality name

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


def _check_sections_are_mappings(sections: dict[str, Any], source: str) -> None:
    """A method's or protocol's section must be a mapping (or empty): ``simclr: [1, 2]`` is refused
    in one line here rather than failing inside ``dict()``. (The core sections are pydantic models,
    which already report a wrong shape as one line.)"""
    for name, section in sections.items():
        if section is not None and not isinstance(section, dict):
            raise UserError(f"{source}: section '{name}' must be a mapping of its keys (e.g. '{name}: {{key: value}}'), "
                            f"got {type(section).__name__} {section!r}; fix it or remove the section to use the defaults")


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params dict; raises ``UserError`` listing every problem."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    raw = dict(raw)
    method_sections = {name: raw.pop(name) for name in list(raw) if name in METHODS.names()}
    protocol_sections = {name: raw.pop(name) for name in list(raw) if name in PROTOCOLS.names()}
    modality_sections = {name: raw.pop(name) for name, m in MODALITIES.items() if m.Params is not None and name in raw}
    _check_sections_are_mappings(method_sections | protocol_sections | modality_sections, source)
    try:
        params = Params.model_validate(raw)
    except ValidationError as err:
        raise UserError(_describe(err, source)) from None
    unknown = [m for m in params.methods if m not in METHODS.names()]
    if unknown:
        raise UserError(
            f"{source}: methods: unknown method(s) {unknown}; valid methods are {METHODS.names()}"
        )
    unknown = [p for p in params.protocols if p not in PROTOCOLS.names()]
    if unknown:
        raise UserError(f"{source}: protocols: unknown protocol(s) {unknown}; valid protocols are {PROTOCOLS.names()}")
    features_only = {m.baseline.name: name for name, m in MODALITIES.items()}  # each modality's features-only baseline
    valid_baselines = [*features_only, "random_init"] + [f"random_init_{m}" for m in METHODS.names()]
    unknown = [b for b in params.baselines if b not in valid_baselines]
    if unknown:
        listed = ", ".join(f"{b} ({m})" for b, m in features_only.items())
        raise UserError(f"{source}: baselines: unknown baseline(s) {unknown}; valid: {listed}, random_init, "
                        "random_init_<method> (that method's own encoder)")
    protocol_params = {}
    for name in PROTOCOLS.names():
        try:
            protocol_params[name] = PROTOCOLS.get(name).Params.model_validate(protocol_sections.get(name) or {})
        except ValidationError as err:
            raise UserError(_describe(err, f"{source} (section '{name}')")) from None
    modality_params = {}
    for name, modality in MODALITIES.items():  # every modality's section, at its defaults when absent
        if modality.Params is not None:
            try:
                modality_params[name] = modality.Params.model_validate(modality_sections.get(name) or {})
            except ValidationError as err:
                raise UserError(_describe(err, f"{source} (section '{name}')")) from None
    validated, pretrain, encoder = {}, {}, {}
    for name in METHODS.names():
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
            validated[name] = METHODS.get(name).Params.model_validate(section)
        except ValidationError as err:
            raise UserError(_describe(err, f"{source} (section '{name}')")) from None
    return params.model_copy(update={"method_params": validated, "method_pretrain": pretrain, "method_encoder": encoder,
                                     "protocol_params": protocol_params, "modality_params": modality_params})


PRESETS = Path(__file__).resolve().parent.parent / "presets"


def merge(base: dict, overlay: dict) -> None:
    """Merge mapping ``overlay`` into mapping ``base`` in place: mappings key by key, lists
    and scalars replace. A new key is allowed here (a method's ``pretrain:`` override may add
    ``epochs``); a misspelt one fails validation."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path} not found; run from the repository root or pass --params")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {err}") from None


def load_params(path: str | Path = "params.yaml", preset: str | None = None) -> Params:
    """Read and validate ``params.yaml``; with ``preset`` (e.g. ``text``), ``presets/<preset>.yaml``
    merged over it first (what ``python -m pipeline.presets <preset>`` would write)."""
    path = Path(path)
    raw = _read_yaml(path)
    source = str(path)
    if preset is not None:
        overlay_path = PRESETS / f"{preset}.yaml"
        if not overlay_path.is_file():
            names = sorted(p.stem for p in PRESETS.glob("*.yaml"))
            raise UserError(f"--preset {preset!r}: no {overlay_path}; valid presets are {names}")
        if isinstance(raw, dict):
            merge(raw, _read_yaml(overlay_path) or {})
        source = f"{path} with presets/{preset}.yaml"
    return parse_params(raw, source)
