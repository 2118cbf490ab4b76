"""N-way K-shot episodes on frozen features, classified by the nearest prototype (Snell et
al. 2017, cosine) or by logistic regression on the support set (Tian et al. 2020,
"Rethinking few-shot image classification"), both on L2-normalised features."""

from __future__ import annotations

import warnings

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

CLASSIFIERS = ("prototype", "logreg")


def _norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _draw_episode(
    features: np.ndarray, labels: np.ndarray, ways: int, shots: int, queries: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Draw ``ways`` classes and ``shots + queries`` images of each: the support sets (one
    ``[shots, D]`` array per way), the queries ``[ways*queries, D]`` and their way index."""
    classes = rng.choice(np.unique(labels), size=ways, replace=False)
    support, query, query_y = [], [], []
    for j, c in enumerate(classes):
        idx = rng.choice(np.flatnonzero(labels == c), size=shots + queries, replace=False)
        support.append(features[idx[:shots]])
        query.append(features[idx[shots:]])
        query_y += [j] * queries
    return support, np.concatenate(query), np.asarray(query_y)


def _prototype_predict(support: list[np.ndarray], query: np.ndarray) -> np.ndarray:
    prototypes = _norm(np.stack([_norm(s).mean(0) for s in support]))  # [ways, D]
    return (_norm(query) @ prototypes.T).argmax(1)


def _logreg_predict(support: list[np.ndarray], query: np.ndarray, c: float, max_iter: int) -> np.ndarray:
    # scikit-learn imported here, not at the top: importing it costs ~1.3 s, which every stage
    # that loads the protocol registry would pay (kNN, fine-tuning and prototypes never use it)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    x = _norm(np.concatenate(support))
    y = np.concatenate([np.full(len(s), j) for j, s in enumerate(support)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # 1-shot support sets have one sample per class, which sklearn flags as "maybe regression"
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(x, y)
    return clf.classes_[clf.decision_function(_norm(query)).argmax(1)]


def episode_accuracy(
    features: np.ndarray, labels: np.ndarray, ways: int, shots: int, queries: int, rng: np.random.Generator,
    classifier: str = "prototype", logreg_c: float = 1.0, logreg_max_iter: int = 1000,
) -> float:
    """One episode: draw ``ways`` classes, ``shots`` support and ``queries`` query images
    per class; classify the queries with ``classifier``:

    - ``"prototype"``: cosine similarity to the class means of the L2-normalised support
      features;
    - ``"logreg"``: multinomial logistic regression (L-BFGS, inverse L2 strength
      ``logreg_c``) fit on the L2-normalised support features.

    features ``[N, D]``, labels ``[N]``. The episode drawn from ``rng`` does not depend on
    the classifier, so both classifiers see the same episodes for the same generator state."""
    support, query, query_y = _draw_episode(features, labels, ways, shots, queries, rng)
    if classifier == "prototype":
        pred = _prototype_predict(support, query)
    elif classifier == "logreg":
        pred = _logreg_predict(support, query, logreg_c, logreg_max_iter)
    else:
        raise ValueError(f"unknown few-shot classifier {classifier!r}; valid: {list(CLASSIFIERS)}")
    return float((pred == query_y).mean())


def few_shot(
    features: np.ndarray, labels: np.ndarray, ways: int | str | None, shots: list[int], queries: int, episodes: int, seed: int,
    classifier: str = "prototype", logreg_c: float = 1.0, logreg_max_iter: int = 1000,
) -> dict:
    """Mean accuracy and 95% confidence interval (1.96 * std / sqrt(episodes)) per K.

    ``ways``: classes per episode, at most the number of classes (more raises
    ``ValueError``: capping would report a ways count that was not used); ``None`` or
    ``"all"`` means every class (all-way episodes). Keys are ``f"{ways}way_{k}shot"`` with
    the resolved number of ways (e.g. ``"10way_5shot"`` for all-way on 10 classes).
    ``classifier``: ``"prototype"`` or ``"logreg"`` (see ``episode_accuracy``); the episodes
    of each K are fixed by ``seed`` and are the same for both classifiers."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown few-shot classifier {classifier!r}; valid: {list(CLASSIFIERS)}")
    n_classes = len(np.unique(labels))
    if ways is None or ways == "all":
        ways = n_classes
    elif isinstance(ways, str) or int(ways) < 2:
        raise ValueError(f"ways must be an integer >= 2, None or 'all', got {ways!r}")
    if n_classes < 2:
        raise ValueError(f"few-shot episodes need at least 2 classes; the labels hold {n_classes}")
    if int(ways) > n_classes:
        raise ValueError(f"{ways}-way episodes need {ways} classes; the labels hold {n_classes} (use ways <= {n_classes} or 'all')")
    ways = int(ways)
    smallest = np.unique(labels, return_counts=True)[1].min()  # over the classes present
    out = {}
    for k in shots:
        if k < 1 or queries < 1:
            raise ValueError(f"few-shot episodes need shots >= 1 and queries >= 1; got {k}-shot with {queries} queries")
        if k + queries > smallest:
            raise ValueError(f"{k}-shot with {queries} queries needs {k + queries} images per class; the smallest class has {smallest}")
        rng = np.random.default_rng([seed, k])  # episodes of each K are fixed by the seed
        # An episode is a tiny problem: BLAS/OpenMP threads cost far more than they save
        # (a support-set fit takes ~2 ms on one thread and ~60 ms on two busy cores).
        with threadpool_limits(limits=1):
            # a progress bar on a terminal only (tqdm disables itself when stderr is not a TTY)
            accs = np.array([
                episode_accuracy(features, labels, ways, k, queries, rng, classifier, logreg_c, logreg_max_iter)
                for _ in tqdm(range(episodes), desc=f"few-shot {classifier} {ways}-way {k}-shot", leave=False, disable=None)
            ])
        out[f"{ways}way_{k}shot"] = {"mean": float(accs.mean()), "ci95": float(1.96 * accs.std(ddof=1) / np.sqrt(episodes)) if episodes > 1 else 0.0}
    return out
