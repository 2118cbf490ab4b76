"""The global RNGs, seeded before anything random runs (pretraining, each evaluation)."""

from __future__ import annotations

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed numpy's and torch's global generators (CPU and every CUDA device)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
