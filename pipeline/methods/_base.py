"""The method interface every SSL method implements.

A method owns its heads, its loss and its views; the training loop, the data and the
evaluations are shared. The pretrain stage calls:

    method.prepare(sample)                 # once: fit data-dependent parts (tokenizer, queue)
    out = method.training_step(images)     # per batch: dict with 'loss' (+ scalars worth logging)
    ... backward, optimizer step ...
    method.after_optimizer_step(progress)  # per batch: EMA / momentum targets, 0 <= progress <= 1
    method.finalize(sample)                # once, after training (e.g. BatchNorm re-estimation)

and the evaluations use only ``method.encoder``. After training (and ``finalize``) it calls
``method.held_out_metrics(batches)`` once for the method's own held-out numbers (perplexity).

``modality`` says what a method trains on: ``"image"`` (uint8 ``[N, C, H, W]``) or ``"text"``
(packed int64 ``[N, 2, L]``: token ids and attention, see ``pipeline/modalities/text/tokenizer.encode_packed``).
"""

from __future__ import annotations

from typing import Callable, ClassVar, Iterator

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from pipeline.config import AugmentParams, Strict
from pipeline.modalities.image.views import ViewMaker, to_float
from pipeline.errors import UserError
from pipeline.modalities.text.encoder import TextEncoder
from pipeline.models.encoder import Encoder


BN_CHUNK = 256  # images per forward when BatchNorm statistics are re-estimated


Batches = Callable[[str], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # split name -> (x, labels) in shard order


class Method(nn.Module):
    name: ClassVar[str]
    Params: ClassVar[type[Strict]]
    modality: ClassVar[str] = "image"  # what training_step takes: "image" or "text" (the shards must match)

    def __init__(self, encoder: Encoder, params: Strict, augment: AugmentParams, seed: int, device: torch.device):
        super().__init__()
        self.encoder = encoder
        self.params = params
        self.views = ViewMaker(augment, seed, device)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The loop (and DDP) call the module; labels are never passed on to the method."""
        return self.training_step(images)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: uint8 ``[N, C, H, W]`` on the training device -> ``{'loss': scalar, ...}``."""
        raise NotImplementedError

    def two_views(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` -> float ``[2N, C, H, W]``: two random views of every image,
        stacked so both go through one forward pass (and BatchNorm sees both)."""
        return torch.cat([self.views(images, view=0), self.views(images, view=1)])  # per-view blur/solarize: augment.blur_p[v]

    def prepare(self, sample: torch.Tensor) -> None:
        """Fit anything learned from data before training (e.g. BEiT's visual tokenizer).

        sample: uint8 ``[N, C, H, W]`` pretrain images on the training device. Whatever is
        fitted must live in parameters or buffers so checkpoints carry it.
        """

    def finalize(self, sample: torch.Tensor) -> None:
        """After training, before the encoder is saved: adapt it with unlabelled
        pretrain images (``sample`` as in ``prepare``), e.g. jigsaw re-estimates BatchNorm
        statistics on whole images. Default: nothing."""

    def require_crops_fit_encoder(self, count: int, size: int, count_key: str, size_key: str) -> None:
        """Multi-crop methods: a ViT takes crops of any size its patch size divides (its positions
        are resampled bicubically), a ResNet any size. Refuse another size early, naming the keys,
        rather than let the patch embedding drop the crop's edge pixels."""
        if count:
            self.encoder.check_input_size(size, size_key)

    @torch.no_grad()
    def reestimate_batchnorm(self, sample: torch.Tensor) -> None:
        """Recompute the encoder's BatchNorm running statistics on whole images (uint8
        ``sample`` ``[N, C, H, W]``) as a cumulative average over the sample (torch's
        ``update_bn``, "precise BN"). For methods whose encoder trained on other inputs (tiles,
        small crops), so that it normalises what the evaluations feed it."""
        update_bn([to_float(chunk) for chunk in sample.split(BN_CHUNK)], self.encoder)

    def held_out_metrics(self, batches: Batches) -> dict[str, float]:
        """Once after training: the method's own numbers on held-out data, e.g. a language
        model's perplexity. ``batches(split)`` iterates ``(x, labels)`` CPU batches of a split
        ("val": held out; "pretrain": e.g. unigram counts) in shard order. Default: none."""
        return {}

    def after_optimizer_step(self, progress: float) -> None:
        """Hook for momentum/EMA target updates; ``progress`` runs from 0 to 1 over training."""

    def optimized_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimizer updates (EMA targets are excluded by overriding this)."""
        return [p for p in self.parameters() if p.requires_grad]

    def extra_state(self) -> dict:
        """State beyond ``state_dict`` that an exact resume needs (RNG of the views)."""
        return {"views": self.views.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.views.load_state_dict(state["views"])


class TextMethod(Method):
    """A method that trains a ``TextEncoder`` on packed int64 ``[N, 2, L]`` batches.

    ``causal`` is the attention the objective needs: a masked LM must see both sides of a
    token, a next-token LM must see none of its future (otherwise it copies the answer).
    """

    modality = "text"
    causal: ClassVar[bool]

    def __init__(self, encoder: TextEncoder, params: Strict, augment: AugmentParams, seed: int, device: torch.device):
        super().__init__(encoder, params, augment, seed, device)
        if not isinstance(encoder, TextEncoder):
            raise UserError(f"{self.name} trains a text Transformer, got encoder.arch {encoder.params.arch!r}: set "
                            f"`encoder: {{arch: transformer}}` under `{self.name}:` in params.yaml and run it on text shards")
        if encoder.params.causal != self.causal:
            want = "true" if self.causal else "false"
            why = "next-token prediction may not see the future" if self.causal else "a masked token is predicted from both sides"
            raise UserError(f"{self.name}.encoder.causal must be {want} ({why}): set `encoder: {{causal: {want}}}` "
                            f"under `{self.name}:` in params.yaml")

    @property
    def device(self) -> torch.device:
        return self.encoder.backbone.tok.weight.device
