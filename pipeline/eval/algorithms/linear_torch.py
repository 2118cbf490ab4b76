"""Multinomial logistic regression on the device: torch's full-batch L-BFGS on standardised
features, the same objective as scikit-learn's ``LogisticRegression(C)``:
``0.5 * ||W||^2 + C * sum_i cross_entropy_i`` (divided here by ``C * N``, which moves no
minimum), intercept unpenalised. Used by ``pipeline.eval.algorithms.linear.linear_probe`` above the size
scikit-learn's float64 CPU solver handles in reasonable time (ImageNet-1k: [1.28M, 2048]
features, 1,000 classes; 10.5 GB as float32 on the device).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CHUNK = 65536  # rows moved host -> device (and predicted) at a time: a memmap is never read whole


def to_device(*arrays: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 ``[N1 + N2 + ..., D]`` on ``device``: the rows of (memory-mapped, any float dtype)
    ``arrays`` one after the other, copied in chunks into one tensor (no host-side concatenation)."""
    out = torch.empty(sum(len(x) for x in arrays), arrays[0].shape[1], dtype=torch.float32, device=device)
    start = 0
    for x in arrays:
        for i in range(0, len(x), CHUNK):
            rows = torch.from_numpy(np.asarray(x[i:i + CHUNK], dtype=np.float32))
            out[start + i:start + i + len(rows)] = rows.to(device)
        start += len(x)
    return out


def standardise_(x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise ``x [N, D]`` in place, by its own column mean and std (scikit-learn's
    StandardScaler: population std, a zero std left at 1) or by ``stats``; returns the stats."""
    if stats is None:  # float64 sums, chunk by chunk: 1.28M float32 rows lose digits, a float64 copy doubles memory
        total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for i in range(0, len(x), CHUNK):
            total += x[i:i + CHUNK].double().sum(0)
        mean = total / len(x)
        sq = torch.zeros_like(total)
        for i in range(0, len(x), CHUNK):
            sq += (x[i:i + CHUNK].double() - mean).square().sum(0)
        std = (sq / len(x)).sqrt()
        std = torch.where(std > 0, std, torch.ones_like(std))
        stats = (mean.float(), std.float())
    x.sub_(stats[0]).div_(stats[1])
    return stats


def fit(x: torch.Tensor, y: torch.Tensor, n_classes: int, c: float, max_iter: int,
        init: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W [K, D], b [K])`` minimising scikit-learn's objective at inverse L2 strength ``c`` on
    standardised ``x [N, D]``, labels ``y [N]`` in ``[0, K)``; warm-started from ``init``."""
    n, d = x.shape
    w = torch.zeros(n_classes, d, device=x.device) if init is None else init[0].clone()
    b = torch.zeros(n_classes, device=x.device) if init is None else init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    # tolerances as scikit-learn's lbfgs (tol 1e-4 on the gradient of its C-scaled objective)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-4 / (c * n), tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(torch.addmm(b, x, w.T), y) + (w * w).sum() / (2 * c * n)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


@torch.no_grad()
def predict_scores(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Class scores ``[N, K]`` of standardised ``x [N, D]``."""
    return torch.cat([torch.addmm(b, x[i:i + CHUNK], w.T) for i in range(0, len(x), CHUNK)])
