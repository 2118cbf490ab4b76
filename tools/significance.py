"""Is a metric's change signal or noise? Tests for a head-vs-base change on the same test examples.

- Classification (per-example predicted classes, ``pipeline/eval/predictions.py``): McNemar's
  test on the paired outcomes, exact binomial with the mid-p correction (Fagerland, Lydersen and
  Laake 2013: the exact test is conservative; mid-p keeps close to the nominal level). Only the
  examples that flipped count: ``b`` right before and wrong after, ``c`` the reverse.
- Any other per-example values (losses, per-episode accuracies): a paired bootstrap interval of
  the mean difference (percentile, ``BOOT`` resamples, seeded).
- A mean with a 95% half-width and nothing per example (few-shot episodes): a normal test of
  the difference of two independent means.

NumPy only (the review runs without torch); every function is deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # level of every test (per change: no correction for the number of changes)
BOOT = 2000  # bootstrap resamples
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Verdict:
    significant: bool | None  # None: no test possible
    test: str  # what was tested, e.g. "McNemar mid-p = 0.003 (31 vs 9 flips)"

    @property
    def label(self) -> str:
        if self.significant is None:
            return "untested"
        return "**significant**" if self.significant else "within noise"


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (log-space sums stay finite for large n)."""
    if k < 0:
        return 0.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2) for i in range(k + 1)]
    top = max(logs)
    return math.exp(top) * sum(math.exp(v - top) for v in logs)


def mcnemar_midp(b: int, c: int) -> float:
    """Two-sided mid-p of McNemar's exact test for ``b`` and ``c`` discordant pairs."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    pmf_k = math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2))
    return max(0.0, min(1.0, 2 * _binom_cdf_half(k, n) - pmf_k))  # 2 * (P(X < k) + P(X = k) / 2)


def paired_classification(labels: np.ndarray, base_pred: np.ndarray, head_pred: np.ndarray, alpha: float = ALPHA) -> Verdict:
    """McNemar mid-p on predictions ``[N]`` of base and head for the same ``labels [N]``."""
    base_ok, head_ok = base_pred == labels, head_pred == labels
    b, c = int((base_ok & ~head_ok).sum()), int((~base_ok & head_ok).sum())
    p = mcnemar_midp(b, c)
    return Verdict(p < alpha, f"McNemar mid-p {_p(p)} ({c} fixed, {b} broken of {len(labels):,})")


def paired_bootstrap(base: np.ndarray, head: np.ndarray, alpha: float = ALPHA, boot: int = BOOT, seed: int = 0) -> Verdict:
    """Percentile bootstrap interval of mean(head - base) over paired per-example values ``[N]``."""
    d = np.asarray(head, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (boot, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Verdict(bool(lo > 0 or hi < 0), f"bootstrap {100 * (1 - alpha):.0f}% interval of the change [{lo:+.4g}, {hi:+.4g}]")


def independent_means(base: float, base_ci95: float, head: float, head_ci95: float, alpha: float = ALPHA) -> Verdict:
    """Normal test of head - base from each mean's 95% half-width (independent estimates)."""
    se = math.hypot(base_ci95, head_ci95) / Z95
    if se == 0:
        return Verdict(None, "no spread recorded")
    p = math.erfc(abs(head - base) / se / math.sqrt(2))
    return Verdict(p < alpha, f"normal test from the 95% CIs, p {_p(p)}")


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"
