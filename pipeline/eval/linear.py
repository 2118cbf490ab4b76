"""Linear probe on frozen features: multinomial logistic regression (L-BFGS), the L2
strength chosen on the validation split, then refit on train+val (Kornblith et al. 2019,
SimCLR appendix B.5)."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm


def _topk(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def linear_probe(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
    c_grid: list[float], max_iter: int, keep_predictions: bool = False,
) -> dict:
    """Each argument is ``(features [N, D], labels [N])``. ``c_grid`` holds inverse L2
    strengths (sklearn's C). Returns test top-1 (and top-5 with more than 5 classes), the
    chosen C and the validation accuracy of every C; with ``keep_predictions`` also
    ``test_predictions``, the predicted label ids ``[N]`` (top-1's)."""
    # imported here: ~1.3 s that stages without a linear probe (kNN, fine-tuning) need not pay
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[0])
    xtr, xva = scaler.transform(train[0]), scaler.transform(val[0])
    # A regularisation path, as LogisticRegressionCV computes one: C from strong to weak, each
    # fit started from the previous solution (warm_start), and the refit on train+val from
    # the chosen C's.
    val_acc, solutions = {}, {}
    clf = LogisticRegression(max_iter=max_iter, warm_start=True)
    for c in tqdm(sorted(c_grid), desc="linear probe: C sweep", leave=False, disable=None):
        clf.set_params(C=c).fit(xtr, train[1])
        val_acc[c] = float(clf.score(xva, val[1]))
        solutions[c] = (clf.coef_.copy(), clf.intercept_.copy())
    best_c = max(val_acc, key=lambda c: (val_acc[c], -c))  # ties: the stronger regulariser
    x_all = np.concatenate([train[0], val[0]])
    y_all = np.concatenate([train[1], val[1]])
    scaler = StandardScaler().fit(x_all)
    clf = LogisticRegression(C=best_c, max_iter=max_iter, warm_start=True)
    clf.coef_, clf.intercept_ = solutions[best_c]
    clf.fit(scaler.transform(x_all), y_all)
    probs = clf.predict_proba(scaler.transform(test[0]))
    # predict_proba's columns follow clf.classes_; map back to label ids
    labels = np.searchsorted(clf.classes_, test[1])
    result = {"top1": _topk(probs, labels, 1), "best_c": best_c, "val_top1_by_c": {str(c): a for c, a in val_acc.items()}}
    if probs.shape[1] > 5:
        result["top5"] = _topk(probs, labels, 5)
    if keep_predictions:
        result["test_predictions"] = clf.classes_[np.argsort(-probs, axis=1)[:, 0]]  # as _topk(k=1) ranks them
    return result
