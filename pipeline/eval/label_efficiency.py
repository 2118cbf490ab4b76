"""Label efficiency: accuracy against the number of labels (SimCLR/BYOL's 1% / 10% tables).

For each label fraction the same class-balanced subset is used by three arms:
(a) supervised training from scratch of a fresh encoder, (b) the linear probe on the SSL
encoder's frozen features (``pipeline.eval.linear.linear_probe``), (c) fine-tuning a copy
of the SSL encoder. (a) and (c) are ``pipeline.eval.finetune.Classifier`` trained by the
shared loop on the in-memory subset.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.config import FinetuneParams
from pipeline.eval.features import encoder_features
from pipeline.eval.finetune import Classifier
from pipeline.eval.linear import linear_probe
from pipeline.eval.linear_sgd import in_memory_batches
from pipeline.train.loop import TrainJob, fit
from pipeline.train.optim import param_groups

ARMS = ("supervised", "linear", "finetune")


def per_class_count(fraction: float, count: int) -> int:
    """``round(fraction * count)`` (halves rounded up), at least 1, at most ``count``."""
    return int(min(count, max(1, math.floor(fraction * count + 0.5))))


def balanced_subset(labels: np.ndarray | torch.Tensor, fraction: float, seed: int) -> np.ndarray:
    """Indices (sorted, int64) of a class-balanced subset of ``labels`` ``[N]``: each class
    present contributes ``per_class_count(fraction, its count)`` images.

    Each class's images are ranked by a permutation seeded with ``(seed, class)``, and the
    subset takes a prefix of that ranking: fixed by the seed, independent of the other
    classes, and nested (the 1% subset lies inside the 10% one for the same seed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    y = np.asarray(labels).astype(np.int64)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        order = np.random.default_rng([seed, int(c)]).permutation(len(idx))
        out.append(idx[order[: per_class_count(fraction, len(idx))]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def train_classifier(
    encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: FinetuneParams,
    encoder_lr_mult: float, seed: int, device: torch.device, desc: str,
) -> Classifier:
    """``finetune.Classifier`` (encoder + new linear head, crop + flip in its forward) trained
    end to end by the shared loop on in-memory uint8 ``images`` ``[N, C, H, W]`` and
    ``labels`` ``[N]``, the encoder at ``encoder_lr_mult`` times the lr. The batch size is
    capped at N; each epoch is a fresh seeded permutation, the partial batch dropped."""
    batch_size = min(cfg.batch_size, len(images))
    cfg = cfg.model_copy(update={"batch_size": batch_size})
    with torch.random.fork_rng(devices=[]):  # the head's init is fixed by the seed
        torch.manual_seed(seed)
        model = Classifier(encoder, num_classes, seed)
    groups = param_groups(model.encoder, encoder_lr_mult) + param_groups(model.head)
    job = TrainJob(
        module=model, param_groups=groups, optim=cfg, amp=True,
        batches=in_memory_batches(images, labels, batch_size, seed), steps_per_epoch=len(images) // batch_size,
    )
    fit(job, device, desc)
    return model


def _top1(model: Classifier, test: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> float:
    pred = model.predict(test[0], device)
    return float((pred == np.asarray(test[1])).mean())


def label_efficiency(
    encoder: nn.Module, build_encoder: Callable[[], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    fractions: Sequence[float], finetune_cfg: FinetuneParams, c_grid: list[float], max_iter: int, seed: int,
    device: torch.device, supervised_cfg: FinetuneParams | None = None, subset_val: bool = True,
    arms: Sequence[str] = ARMS, num_classes: int | None = None,
) -> dict[float, dict]:
    """Top-1 on ``test`` of each arm for each label ``fraction`` (e.g. ``[0.01, 0.1, 1.0]``).

    encoder: the SSL encoder (left unchanged: fine-tuning trains a deep copy per fraction).
    build_encoder: returns a fresh, randomly initialised encoder (called under
    ``torch.manual_seed(seed)``, once per fraction) for the supervised arm.
    train, val, test: ``(images uint8 [N, C, H, W], labels int [N])`` on the CPU.

    The labelled set of a fraction is ``balanced_subset(train, fraction, seed)`` and, with
    ``subset_val`` (default), ``balanced_subset(val, fraction, seed + 1)``: the linear probe
    sweeps its L2 strength on that val subset and refits on train+val subsets (as
    ``linear_probe`` always does), and the supervised and fine-tune arms train on the same
    train+val subset images, so all three arms see the same labels, ``n_labels`` of them.
    With ``subset_val=False`` the probe uses the whole val split for its sweep and refit (its
    labels then exceed ``n_labels``, which counts only the train subset) and the two trained
    arms use the train subset only.

    finetune_cfg: epochs/batch/lr/... of arm (c) (``encoder_lr_mult`` applies);
    supervised_cfg: of arm (a) (defaults to ``finetune_cfg``; the whole network trains at
    the full lr, ``encoder_lr_mult`` ignored). ``arms`` picks a subset of
    ``("supervised", "linear", "finetune")``.

    Returns ``{fraction: {"supervised": top1, "linear": top1, "finetune": top1, "n_labels": n,
    "fraction_effective": f}}`` (only the requested arms). ``fraction_effective`` is
    ``n_labels`` over the images it was drawn from (train + val, or train alone without
    ``subset_val``): per-class rounding, and the one image every class keeps however small
    the fraction, make it differ from the requested ``fraction``.
    """
    unknown = set(arms) - set(ARMS)
    if unknown:
        raise ValueError(f"unknown arm(s) {sorted(unknown)}; valid: {list(ARMS)}")
    supervised_cfg = supervised_cfg or finetune_cfg
    x_tr, y_tr = train[0], torch.as_tensor(np.asarray(train[1])).long()
    x_va, y_va = val[0], torch.as_tensor(np.asarray(val[1])).long()
    n_classes = num_classes or int(max(int(y_tr.max()), int(y_va.max()), int(np.asarray(test[1]).max()))) + 1

    feats = None
    if "linear" in arms:  # frozen features once; each fraction indexes them
        home, was_training = next(encoder.parameters()).device, encoder.training
        featurize = encoder_features(encoder, device)  # eval mode, on device
        feats = {"train": featurize(x_tr), "val": featurize(x_va), "test": featurize(test[0])}
        encoder.to(home).train(was_training)

    out: dict[float, dict] = {}
    for fraction in fractions:
        tr_idx = balanced_subset(y_tr.numpy(), fraction, seed)
        va_idx = balanced_subset(y_va.numpy(), fraction, seed + 1) if subset_val else np.arange(len(y_va))
        if subset_val:
            images = torch.cat([x_tr[torch.from_numpy(tr_idx)], x_va[torch.from_numpy(va_idx)]])
            labels = torch.cat([y_tr[torch.from_numpy(tr_idx)], y_va[torch.from_numpy(va_idx)]])
        else:
            images, labels = x_tr[torch.from_numpy(tr_idx)], y_tr[torch.from_numpy(tr_idx)]
        row: dict = {}
        if "supervised" in arms:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fresh = build_encoder()
            model = train_classifier(fresh, images, labels, n_classes, supervised_cfg, 1.0, seed, device,
                                     f"label-eff {fraction:g} supervised")
            row["supervised"] = _top1(model, test, device)
        if "linear" in arms:
            res = linear_probe(
                (feats["train"][tr_idx], y_tr.numpy()[tr_idx]), (feats["val"][va_idx], y_va.numpy()[va_idx]),
                (feats["test"], np.asarray(test[1])), c_grid, max_iter,
            )
            row["linear"] = res["top1"]
        if "finetune" in arms:
            model = train_classifier(copy.deepcopy(encoder), images, labels, n_classes, finetune_cfg,
                                     finetune_cfg.encoder_lr_mult, seed, device, f"label-eff {fraction:g} finetune")
            row["finetune"] = _top1(model, test, device)
        row["n_labels"] = int(len(labels))
        row["fraction_effective"] = len(labels) / (len(y_tr) + len(y_va) if subset_val else len(y_tr))
        out[fraction] = row
    return out
