"""Fine-tuning: encoder + a new linear head trained end to end with labels, the encoder at
a lower learning rate. With a randomly initialised encoder the same code is the
supervised-from-scratch baseline."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import FinetuneParams
from pipeline.data.augment import random_resized_crop, to_float
from pipeline.data.shards import stream_batches
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups

FINETUNE_CROP_SCALE = (0.5, 1.0)  # light augmentation: crop + flip, as in the supervised recipes


class Classifier(nn.Module):
    """encoder + linear head; ``forward(images uint8 [N,C,H,W], labels [N])`` -> loss dict."""

    def __init__(self, encoder: nn.Module, num_classes: int, seed: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.feature_dim, num_classes)
        self.gen: torch.Generator | None = None
        self.seed = seed

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.gen is None or self.gen.device != images.device:
            self.gen = torch.Generator(device=images.device)
            self.gen.manual_seed(self.seed)
        x = random_resized_crop(to_float(images), FINETUNE_CROP_SCALE, (0.75, 1.3333), 0.5, self.gen)
        logits = self.head(self.encoder(x))
        return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, device: torch.device, batch_size: int = 1024) -> np.ndarray:
        self.eval()
        out = [self.head(self.encoder(to_float(images[i : i + batch_size].to(device)))).argmax(1).cpu() for i in range(0, len(images), batch_size)]
        return torch.cat(out).numpy()


def finetune(
    encoder: nn.Module, shard_dir: str, n_train: int, num_classes: int, test: tuple[torch.Tensor, torch.Tensor],
    cfg: FinetuneParams, seed: int, device: torch.device, desc: str = "finetune",
) -> dict:
    """Train on the ``train`` shards, report top-1 on ``test`` (uint8 images, labels)."""
    model = Classifier(encoder, num_classes, seed)
    groups = param_groups(model.encoder, cfg.encoder_lr_mult) + param_groups(model.head)
    job = TrainJob(
        module=model, param_groups=groups, optim=cfg, amp=True,
        batches=lambda epoch: stream_batches(shard_dir, "train", cfg.batch_size, 5000, seed=seed * 1000 + epoch),
        steps_per_epoch=n_train // cfg.batch_size, batch_size_key="finetune.batch_size", lr_key="finetune.lr",
    )
    history = fit(job, device, desc)
    pred = model.predict(test[0], device)
    return {"top1": float((pred == test[1].numpy()).mean()), "train_acc_last_epoch": history[-1]["acc"], "epochs": cfg.epochs}
