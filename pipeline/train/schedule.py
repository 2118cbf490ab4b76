"""Learning-rate schedules precomputed per step, so a resumed run continues exactly."""

from __future__ import annotations

import math


def warmup_cosine(total_steps: int, warmup_steps: int, final: float = 0.0) -> list[float]:
    """Multipliers of the base lr: linear warmup from ~0 to 1, then cosine from 1 to ``final``."""
    out = []
    for step in range(total_steps):
        if step < warmup_steps:
            out.append((step + 1) / warmup_steps)
        else:
            t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            out.append(final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))
    return out
