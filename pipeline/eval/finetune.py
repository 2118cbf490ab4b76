"""Fine-tuning: encoder + a new linear head trained end to end with labels by the shared
training loop, the encoder at a lower learning rate. With a randomly initialised encoder at
the full learning rate the same code is the supervised-from-scratch baseline. Images train
on random resized crops; text (packed int64 entries) trains on the entries as they are."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline import dist
from pipeline.config import FinetuneParams
from pipeline.data.augment import random_resized_crop, to_float
from pipeline.eval.features import encoder_features
from pipeline.eval.linear_sgd import in_memory_batches, steps_per_epoch
from pipeline.models.encoder import text_lengths
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups


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

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.dtype == torch.uint8:  # images: a random view; packed text trains as it is
            if self.gen is None or self.gen.device != x.device:
                self.gen = torch.Generator(device=x.device)
                self.gen.manual_seed(self.seed + dist.rank())  # each rank its own views (rank 0: as one process)
            x = random_resized_crop(to_float(x), self.crop_scale, (0.75, 1.3333), self.hflip, self.gen)
        logits = self.head(self.encoder(x))
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor, device: torch.device, batch_size: int = 1024) -> np.ndarray:
        """Predicted class ``[N]`` of un-augmented images or packed text ``x``, in eval mode."""
        self.eval()
        features = encoder_features(self.encoder, device, batch_size)(x)  # text: in length-sorted batches
        return self.head(torch.from_numpy(features).to(device)).argmax(1).cpu().numpy()


def train_classifier(
    encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: FinetuneParams,
    encoder_lr_mult: float, seed: int, device: torch.device, desc: str,
) -> tuple[Classifier, list[dict]]:
    """``Classifier`` (``encoder``, trained in place, + a new linear head) trained end to end
    on in-memory ``images`` (uint8 ``[N, C, H, W]``, or packed text int64 ``[N, 2, L]``) and
    ``labels`` ``[N]``, the encoder at
    ``encoder_lr_mult`` times the lr. The batch size is capped at N; each epoch is a fresh
    seeded permutation, the partial batch dropped; text entries go in batches of similar
    lengths, sorted in windows of ``cfg.length_group`` batches (``in_memory_batches``).
    Returns the model and its history."""
    batch_size = min(cfg.batch_size, len(images))
    cfg = cfg.model_copy(update={"batch_size": batch_size})
    with torch.random.fork_rng(devices=[]):  # the head's init is fixed by the seed
        torch.manual_seed(seed)
        model = Classifier(encoder, num_classes, seed, tuple(cfg.crop_scale), cfg.hflip)
    groups = param_groups(model.encoder, encoder_lr_mult) + param_groups(model.head)
    lengths = text_lengths(images) if images.dtype == torch.int64 else None  # text: length-grouped batches
    job = TrainJob(
        module=model, param_groups=groups, optim=cfg, amp=cfg.amp,
        batches=in_memory_batches(images, labels, batch_size, seed, lengths, cfg.length_group),
        steps_per_epoch=steps_per_epoch(len(images), batch_size),
        batch_size_key="finetune.batch_size", lr_key="finetune.lr",
    )
    history = fit(job, device, desc)
    return model, history


def top1(model: Classifier, test: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float:
    """Top-1 accuracy of ``model`` on ``(x, labels [N])``: uint8 images or packed int64 text."""
    return float((model.predict(test[0], device) == np.asarray(test[1])).mean())
