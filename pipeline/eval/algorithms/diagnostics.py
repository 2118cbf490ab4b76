"""Representation diagnostics: pure functions of embeddings, plus ``diagnose`` for an encoder.

Every function takes a numpy array or a torch tensor (any float dtype, any device) and
returns a Python float; the arithmetic is done in float64 on the CPU.

- ``alignment`` and ``uniformity``: Wang & Isola (2020), "Understanding contrastive
  representation learning through alignment and uniformity on the hypersphere".
- ``effective_rank``: Roy & Vetterli (2007), "The effective rank: a measure of effective
  dimensionality" (as RankMe, Garrido et al. 2023, uses it for SSL embeddings).
- ``embedding_std`` / ``collapsed``: SimSiam's collapse monitor (Chen & He 2021, Sec. 4.1):
  the std of the L2-normalised output per dimension is about 1/sqrt(d) for an embedding
  spread over the sphere and 0 for a collapsed (constant) one.
- ``infonce_loss`` / ``infonce_mi_lower_bound``: van den Oord et al. (2018); Poole et al.
  (2019): I(X; Y) >= log(K) - L_InfoNCE with K candidates (one positive).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.eval.features import BATCH, encoder_features

Array = np.ndarray | torch.Tensor


def _t(x: Array) -> torch.Tensor:
    """float64 CPU tensor of ``x`` (numpy or torch)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.asarray(x, dtype=np.float64))
    return x.detach().to("cpu", torch.float64)


def _normalise(x: Array) -> torch.Tensor:
    return F.normalize(_t(x), dim=1, eps=1e-12)


def alignment(z1: Array, z2: Array, alpha: float = 2.0) -> float:
    """Alignment loss ``E_i ||f(x_i) - f(y_i)||_2^alpha`` over positive pairs.

    z1, z2: ``[N, D]`` embeddings of the two views of N images (row i of each is a positive
    pair); both are L2-normalised first. 0 for identical views, at most 2^alpha (antipodal).
    Lower is better aligned.
    """
    a, b = _normalise(z1), _normalise(z2)
    if a.shape != b.shape:
        raise ValueError(f"alignment needs two [N, D] arrays of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(z: Array, t: float = 2.0, chunk: int = 2048) -> float:
    """Uniformity loss ``log E_{i<j} exp(-t ||f(x_i) - f(x_j)||_2^2)`` over all N(N-1)/2
    distinct pairs of the L2-normalised rows of z ``[N, D]`` (N >= 2).

    0 when every embedding is the same (collapse); the more uniform on the sphere, the more
    negative (its minimum for large N in D dims approaches that of the uniform distribution,
    e.g. about -4 for t=2 and large D). Computed in row chunks with a log-sum-exp, so memory
    is ``O(chunk * N)``.
    """
    x = _normalise(z)
    n = x.shape[0]
    if n < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    parts = []
    for start in range(0, n - 1, chunk):
        rows = x[start : start + chunk]  # [c, D]
        sq = torch.cdist(rows, x).pow(2)  # [c, N]
        i = torch.arange(start, start + len(rows)).unsqueeze(1)
        j = torch.arange(n).unsqueeze(0)
        parts.append((-t * sq)[j > i])  # strict upper triangle: each distinct pair once
    log_terms = torch.cat(parts)
    return float(torch.logsumexp(log_terms, 0) - math.log(len(log_terms)))


def effective_rank(z: Array) -> float:
    """Effective rank (Roy & Vetterli 2007) of the covariance of z ``[N, D]``:
    ``exp(H(p))`` with ``p_k = s_k / sum(s)`` the normalised singular values of the D x D
    covariance matrix (its eigenvalues) and H the Shannon entropy (nats, 0 log 0 = 0).

    Between 1 and D: D for an isotropic embedding (equal variance in every direction), 1 when
    all variance lies along one direction. A constant embedding (zero covariance) gives 0.
    """
    x = _t(z)
    if x.shape[0] < 2:
        raise ValueError("effective_rank needs at least 2 embeddings")
    x = x - x.mean(0, keepdim=True)
    cov = x.T @ x / (x.shape[0] - 1)  # [D, D]
    s = torch.linalg.svdvals(cov)
    total = s.sum()
    if total <= 1e-12 * max(1.0, float(x.abs().max()) ** 2):
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_std(z: Array) -> float:
    """Mean over the D dimensions of the per-dimension std (over the N rows) of the
    L2-normalised z ``[N, D]``. About ``1/sqrt(D)`` for embeddings spread over the sphere
    (e.g. isotropic Gaussian), 0 when every embedding is the same (collapse)."""
    x = _normalise(z)
    if x.shape[0] < 2:
        raise ValueError("embedding_std needs at least 2 embeddings")
    return float(x.std(dim=0, unbiased=True).mean())


def collapsed(std: float, dim: int, threshold: float = 0.1) -> bool:
    """True when ``std`` (``embedding_std``) is below ``threshold`` times the 1/sqrt(dim) of a
    non-collapsed ``dim``-dimensional embedding, i.e. ``std * sqrt(dim) < threshold``.

    Note: raw encoder features after a ReLU are all non-negative, so their normalised
    std*sqrt(D) is naturally below 1 (often 0.2-0.6) without collapse; 0.1 flags a
    (near-)constant embedding."""
    return bool(std * math.sqrt(dim) < threshold)


def infonce_loss(z1: Array, z2: Array, temperature: float = 0.1) -> float:
    """Symmetric InfoNCE loss (nats) with a cosine-similarity / temperature critic: row i of
    z1 ``[N, D]`` must pick its positive, row i of z2 ``[N, D]``, among all N rows of z2 (and
    vice versa); the mean of the two directions. Each anchor has K = N candidates."""
    a, b = _normalise(z1), _normalise(z2)
    logits = a @ b.T / temperature  # [N, N]
    target = torch.arange(a.shape[0])
    return float((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)


def infonce_mi_lower_bound(loss: float, k: int) -> float:
    """The InfoNCE bound on mutual information (nats): ``I >= log(K) - L``, with K the
    number of candidates per anchor including the positive and L the InfoNCE loss in nats.
    Never exceeds log(K), so it saturates for good encoders with few candidates."""
    if k < 2:
        raise ValueError("the InfoNCE bound needs K >= 2 candidates")
    return float(math.log(k) - loss)


@torch.no_grad()
def diagnose(
    encoder: nn.Module, samples: torch.Tensor, views_fn: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
    temperature: float = 0.1, collapse_threshold: float = 0.1, batch_size: int = BATCH, clean: np.ndarray | None = None,
) -> dict:
    """All diagnostics for ``encoder`` (features from ``encoder_features``: a copy in eval mode,
    text in length-sorted batches; the caller's encoder is left as it is).

    samples: ``[N, C, H, W]`` uint8 images, or packed int64 text ``[N, 2, L]`` (N >= 2).
    ``views_fn(x)`` gets them on ``device`` and returns one random view the encoder takes: for
    images float ``[N, C, H', W']`` in [0, 1] (a ``pipeline.modalities.image.views.ViewMaker``), for text
    a random masking ``[N, 2, L]`` (a ``pipeline.modalities.text.views.TextViews``); it is called
    twice, for the two views of each sample.

    - alignment: between the two views' features (alpha=2);
    - uniformity: t=2, mean of the two views' values;
    - infonce_loss / mi_lower_bound: symmetric InfoNCE of the two views, K = N candidates;
    - effective_rank, std, std_sqrt_dim, collapsed: on the features of the un-augmented
      samples (the representation the evaluations use): ``clean`` ``[N, D]`` when the caller
      has them already (``EvalContext.featurize``), else computed here.
    """
    featurize = encoder_features(encoder, device, batch_size)
    x = samples.to(device)
    f1, f2 = featurize(views_fn(x)), featurize(views_fn(x))
    if clean is None:
        clean = featurize(samples)
    n, dim = clean.shape
    std = embedding_std(clean)
    loss = infonce_loss(f1, f2, temperature)
    return {
        "alignment": alignment(f1, f2),
        "uniformity": (uniformity(f1) + uniformity(f2)) / 2,
        "effective_rank": effective_rank(clean),
        "feature_dim": int(dim),
        "std": std,
        "std_sqrt_dim": std * math.sqrt(dim),
        "collapsed": collapsed(std, dim, collapse_threshold),
        "infonce_loss": loss,
        "mi_lower_bound": infonce_mi_lower_bound(loss, n),
        "infonce_k": int(n),
        "temperature": temperature,
        "n_images": int(n),
    }
