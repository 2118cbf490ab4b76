"""Fine-tuning: encoder + a new linear head trained end to end with labels by the shared
training loop, the encoder at a lower learning rate. With a randomly initialised encoder at
the full learning rate the same code is the supervised-from-scratch baseline. Images train
on random resized crops; text (packed int64 entries) trains on the entries as they are."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline import dist
from pipeline.config import OptimParams
from pipeline.modalities.base import modality_of_encoder
from pipeline.modalities.image.views import random_resized_crop, to_float
from pipeline.data.labelled import LabelledSet
from pipeline.eval.features import encoder_features
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups


class FinetuneParams(OptimParams):
    """The fine-tuning recipe ``train_classifier`` takes: the ``finetune`` protocol's params
    section, and ``label_efficiency.finetune`` (params.yaml aliases the two)."""

    weight_decay: float = Field(5e-4, ge=0)
    encoder_lr_mult: float = Field(1.0, ge=0, le=1)  # encoder lr = lr * this (a random init trains at the full lr)
    crop_scale: list[float] = Field(default_factory=lambda: [0.5, 1.0], min_length=2, max_length=2)  # training views
    hflip: float = Field(0.5, ge=0, le=1)
    shuffle_buffer: int = Field(5000, ge=1)  # images: samples shuffled as they stream from the shards
    # text: batches of similar lengths, sorted in windows of this many batches (1: random batches); images ignore it
    length_group: int = Field(50, ge=1)
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU
    nproc_per_node: int = Field(1, ge=1)  # >1: the finetune stage runs under torchrun with DDP


class Classifier(nn.Module):
    """encoder + linear head; ``forward(x, labels [N])`` -> loss dict, x uint8 images
    ``[N, C, H, W]`` or packed int64 text ``[N, 2, L]``. Training views of images: random
    resized crop (``crop_scale``) + horizontal flip (``hflip``); text: none (the entries as they are)."""

    def __init__(self, encoder: nn.Module, num_classes: int, seed: int, crop_scale: tuple[float, float], hflip: float):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)
        self.gen: torch.Generator | None = None
        self.seed, self.crop_scale, self.hflip = seed, crop_scale, hflip
        self.random_views = modality_of_encoder(encoder).random_crops  # images: random resized crops; text: none

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.random_views:  # images: a random view; packed text trains as it is
            if self.gen is None or self.gen.device != x.device:
                self.gen = torch.Generator(device=x.device)
                self.gen.manual_seed(self.seed + dist.rank())  # each rank its own views (rank 0: as one process)
            x = random_resized_crop(to_float(x), self.crop_scale, (0.75, 1.3333), self.hflip, self.gen)
        logits = self.head(self.encoder(x))
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}


def train_classifier(
    encoder: nn.Module, data: LabelledSet, num_classes: int, cfg: FinetuneParams,
    encoder_lr_mult: float, seed: int, device: torch.device, desc: str,
) -> tuple[Classifier, list[dict]]:
    """``Classifier`` (``encoder``, trained in place, + a new linear head) trained end to end
    on ``data`` (uint8 images ``[B, C, H, W]`` or packed text int64 ``[B, 2, L]`` with labels:
    streamed from the shards, or in memory), the encoder at ``encoder_lr_mult`` times the lr.
    The batch size is capped at the sample count; each epoch is a fresh seeded order, the
    partial batch dropped. Returns the model and its history."""
    batch_size = min(cfg.batch_size, data.count)
    cfg = cfg.model_copy(update={"batch_size": batch_size})
    with torch.random.fork_rng(devices=[]):  # the head's init is fixed by the seed
        torch.manual_seed(seed)
        model = Classifier(encoder, num_classes, seed, tuple(cfg.crop_scale), cfg.hflip)
    groups = param_groups(model.encoder, encoder_lr_mult) + param_groups(model.head)
    job = TrainJob(
        module=model, param_groups=groups, optim=cfg, amp=cfg.amp,
        batches=data.batches_for(batch_size, seed), steps_per_epoch=data.steps(batch_size),
        batch_size_key="finetune.batch_size", lr_key="finetune.lr",
    )
    history = fit(job, device, desc)
    return model, history


@torch.no_grad()
def top1(model: Classifier, test: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
         keep: list | None = None) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on batches ``(x, labels [B])`` of un-augmented
    uint8 images or packed int64 text, read one batch at a time (a split is never held whole).
    ``keep``: a list that receives ``(predicted classes [N], labels [N])``."""
    model.eval()
    featurize = encoder_features(model.encoder, device)  # text: in length-sorted batches
    correct = total = 0
    preds, seen = [], []
    for x, labels in test:
        pred = model.head(torch.from_numpy(featurize(x)).to(device)).argmax(1).cpu()
        correct += int((pred == labels).sum())
        total += len(labels)
        if keep is not None:
            preds.append(pred)
            seen.append(labels)
    if keep is not None:
        keep.append((torch.cat(preds), torch.cat(seen)))
    return correct / total
