"""The review's tests of significance: exact against a naive restatement, and the planted cases
the issue names (a no-op is within noise, +2 points on a 10k test split is significant)."""

import math

import numpy as np
import pytest

from tools.significance import (ALPHA, independent_means, mcnemar_midp, paired_bootstrap,
                                paired_classification)


def _midp_naive(b, c):
    """Fagerland et al. (2013): mid-p = 2 * [P(X <= k) - P(X = k) / 2], X ~ Bin(b + c, 1/2), k = min(b, c)."""
    n, k = b + c, min(b, c)
    pmf = [math.comb(n, i) / 2 ** n for i in range(k + 1)]
    return min(1.0, 2 * (sum(pmf) - pmf[k] / 2))


@pytest.mark.parametrize("b, c", [(0, 1), (5, 5), (3, 12), (0, 7), (40, 80), (150, 170), (300, 500)])
def test_mcnemar_midp_matches_the_formula(b, c):
    assert mcnemar_midp(b, c) == pytest.approx(_midp_naive(b, c), rel=1e-9, abs=1e-15)
    assert mcnemar_midp(b, c) == pytest.approx(mcnemar_midp(c, b))  # two-sided


def _test_split(n=10_000, acc=0.87, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    pred = np.where(rng.random(n) < acc, labels, (labels + rng.integers(1, classes, n)) % classes)
    return rng, labels, pred


def _flip(rng, labels, pred, fix, brk):
    """``fix`` wrong predictions made right, ``brk`` right ones made wrong (churn as a re-run has)."""
    wrong, right = np.flatnonzero(pred != labels), np.flatnonzero(pred == labels)
    fixed = rng.choice(wrong, fix, replace=False)
    out = pred.copy()
    out[fixed] = labels[fixed]
    broken = rng.choice(right, brk, replace=False)
    out[broken] = (labels[broken] + 1) % 10
    return out


def test_a_no_op_is_within_noise():
    _, labels, pred = _test_split()
    v = paired_classification(labels, pred, pred.copy())
    assert v.significant is False and v.label == "within noise" and "0 fixed, 0 broken" in v.test


def test_a_rerun_with_churn_but_no_real_change_is_within_noise():
    rng, labels, pred = _test_split()
    head = _flip(rng, labels, pred, fix=160, brk=150)  # +0.1 point, 310 examples flipped
    assert abs((head == labels).mean() - (pred == labels).mean() - 0.001) < 1e-12
    assert paired_classification(labels, pred, head).label == "within noise"


def test_a_planted_two_point_gain_on_10k_is_significant():
    rng, labels, pred = _test_split()
    head = _flip(rng, labels, pred, fix=500, brk=300)  # +2.0 points
    assert (head == labels).mean() - (pred == labels).mean() == pytest.approx(0.02)
    v = paired_classification(labels, pred, head)
    assert v.significant is True and v.label == "**significant**" and "< 0.001" in v.test


def test_bootstrap_interval_of_per_example_values():
    rng = np.random.default_rng(1)
    base = rng.normal(1.0, 0.5, 2000)
    assert paired_bootstrap(base, base.copy()).significant is False
    assert paired_bootstrap(base, base + rng.normal(0.0, 0.5, 2000)).significant is False  # noise only
    assert paired_bootstrap(base, base + rng.normal(0.1, 0.5, 2000)).significant is True   # +0.1 = 9 standard errors
    assert "95% interval" in paired_bootstrap(base, base).test


def test_independent_means_from_their_cis():
    assert independent_means(0.80, 0.007, 0.803, 0.007).significant is False
    assert independent_means(0.80, 0.007, 0.83, 0.007).significant is True
    assert ALPHA == 0.05
