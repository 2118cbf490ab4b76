"""Linear probe on frozen features: multinomial logistic regression (L-BFGS), the L2
strength chosen on the validation split, then refit on train+val (Kornblith et al. 2019,
SimCLR appendix B.5). Two solvers of the same objective: scikit-learn's (float64, CPU; the
CPU default's) and torch's L-BFGS on the device (``pipeline.eval.algorithms.linear_torch``) for sizes
scikit-learn would take hours on."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

# backend "auto" on the CPU: scikit-learn up to this many train feature values (N x D; the image
# default's 10k x 256, raw pixels' 10k x 784 and the text preset's TF-IDF 4k x 10k stay on it, so
# their numbers do not move), torch above (a float64 copy of 1e8 values is 800 MB). On CUDA: torch.
SKLEARN_MAX_ELEMENTS = 100_000_000


def resolve_backend(backend: str, n: int, d: int, device: torch.device | None = None) -> str:
    """``"sklearn"`` or ``"torch"`` for ``backend`` (auto: torch on CUDA, else by the train features' size ``n x d``)."""
    if backend == "auto":
        if device is not None and device.type == "cuda":
            return "torch"
        return "sklearn" if n * d <= SKLEARN_MAX_ELEMENTS else "torch"
    return backend


def sweep_subset(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Sorted seeded indices of at most ``size`` of ``n`` train samples the C sweep fits (None: all)."""
    if size is None or n <= size:
        return None
    return np.sort(np.random.default_rng([seed, n]).choice(n, size=size, replace=False))


def _topk(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def linear_probe(
    train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
    c_grid: list[float], max_iter: int, backend: str = "auto", sweep_size: int | None = None, seed: int = 0,
    device: torch.device | None = None, keep_predictions: bool = False,
) -> dict:
    """Each argument is ``(features [N, D], labels [N])`` (features may be memory-mapped).
    ``c_grid`` holds inverse L2 strengths (sklearn's C). The sweep fits a seeded subsample of
    at most ``sweep_size`` train samples (``sweep_subset``), the final fit all of train + val.
    Returns test top-1 (and top-5 with more than 5 classes), the chosen C and the validation
    accuracy of every C (and ``"backend": "torch"`` when torch solved it); with
    ``keep_predictions`` also ``test_predictions``, the predicted label ids ``[N]`` (top-1's)."""
    sub = sweep_subset(len(train[1]), sweep_size, seed)
    sweep = train if sub is None else (np.asarray(train[0][sub]), train[1][sub])
    if resolve_backend(backend, *np.shape(train[0]), device) == "torch":
        result = _torch_probe(sweep, train, val, test, c_grid, max_iter, device or torch.device("cpu"))
    elif sub is not None:
        result = _sklearn_probe(sweep, val, test, c_grid, max_iter, refit=(train, val)) | {"sweep_size": len(sub)}
    else:
        result = _sklearn_probe(train, val, test, c_grid, max_iter)
    if not keep_predictions:
        del result["test_predictions"]
    return result


def _sklearn_probe(train, val, test, c_grid, max_iter, refit=None) -> dict:
    """scikit-learn's probe: the sweep on ``train``, the refit on ``refit`` (default: train + val)."""
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
    refit = refit or (train, val)
    x_all = np.concatenate([refit[0][0], refit[1][0]])
    y_all = np.concatenate([refit[0][1], refit[1][1]])
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
    result["test_predictions"] = clf.classes_[np.argsort(-probs, axis=1)[:, 0]]  # as _topk(k=1) ranks them
    return result


def _torch_probe(sweep, train, val, test, c_grid, max_iter, device: torch.device) -> dict:
    """The same recipe as ``_sklearn_probe`` with ``linear_torch``'s solver on ``device``: the C
    path warm-started on ``sweep``, then the refit on train + val from the chosen C's solution."""
    from pipeline.eval.algorithms import linear_torch as lt

    y_all = np.concatenate([train[1], val[1]])
    classes = np.unique(y_all)
    as_ids = lambda y: torch.as_tensor(np.searchsorted(classes, y), device=device)  # noqa: E731
    xs, xv = lt.to_device(sweep[0], device=device), lt.to_device(val[0], device=device)
    stats = lt.standardise_(xs)
    lt.standardise_(xv, stats)
    ys, yv = as_ids(sweep[1]), as_ids(val[1])
    val_acc, solutions, init = {}, {}, None
    for c in tqdm(sorted(c_grid), desc="linear probe (torch): C sweep", leave=False, disable=None):
        init = solutions[c] = lt.fit(xs, ys, len(classes), c, max_iter, init)
        val_acc[c] = float((lt.predict_scores(xv, *init).argmax(1) == yv).float().mean())
    best_c = max(val_acc, key=lambda c: (val_acc[c], -c))  # ties: the stronger regulariser
    del xs, xv
    x_all = lt.to_device(train[0], val[0], device=device)
    stats = lt.standardise_(x_all)
    w, b = lt.fit(x_all, as_ids(y_all), len(classes), best_c, max_iter, solutions[best_c])
    del x_all
    xt = lt.to_device(test[0], device=device)
    lt.standardise_(xt, stats)
    scores = lt.predict_scores(xt, w, b).cpu().numpy()
    labels = np.searchsorted(classes, test[1])
    result = {"top1": _topk(scores, labels, 1), "best_c": best_c, "val_top1_by_c": {str(c): a for c, a in val_acc.items()},
              "backend": "torch", "sweep_size": len(sweep[1])}
    if scores.shape[1] > 5:
        result["top5"] = _topk(scores, labels, 5)
    result["test_predictions"] = classes[np.argsort(-scores, axis=1)[:, 0]]  # as _topk(k=1) ranks them
    return result
