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


def _class_members(labels: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The sorted classes and, per class, the indices of its samples (looked up once, not
    per episode: the per-episode ``flatnonzero`` scan was a third of drawing's time)."""
    classes = np.unique(labels)
    return classes, [np.flatnonzero(labels == c) for c in classes]


def _draw_episode(
    classes: np.ndarray, members: list[np.ndarray], ways: int, shots: int, queries: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``ways`` classes and ``shots + queries`` samples of each: the support indices
    ``[ways, shots]`` and the query indices ``[ways * queries]`` (way j's queries are rows
    ``j*queries .. (j+1)*queries - 1``). ``rng`` is drawn from in the same order as always, so
    the episodes of a seed stay what they were."""
    chosen = rng.choice(len(classes), size=ways, replace=False)
    picks = [rng.choice(members[c], size=shots + queries, replace=False) for c in chosen]
    return np.stack([p[:shots] for p in picks]), np.concatenate([p[shots:] for p in picks])


def _prototype_predict(support: np.ndarray, query: np.ndarray) -> np.ndarray:
    """support ``[ways, shots, D]``, query ``[Q, D]`` -> the nearest prototype's way ``[Q]``."""
    prototypes = _norm(_norm(support).mean(1))  # [ways, D]
    return (_norm(query) @ prototypes.T).argmax(1)


def _logreg_predict(support: np.ndarray, query: np.ndarray, c: float, max_iter: int) -> np.ndarray:
    """support ``[ways, shots, D]``, query ``[Q, D]`` -> the predicted way ``[Q]``."""
    # scikit-learn imported here, not at the top: importing it costs ~1.3 s, which every stage
    # that loads the protocol registry would pay (kNN, fine-tuning and prototypes never use it)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    ways, shots, dim = support.shape
    x = _norm(support.reshape(ways * shots, dim))
    y = np.repeat(np.arange(ways), shots)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # 1-shot support sets have one sample per class, which sklearn flags as "maybe regression"
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        clf = LogisticRegression(C=c, max_iter=max_iter).fit(x, y)
    return clf.classes_[clf.decision_function(_norm(query)).argmax(1)]


def _episode_accuracies(
    features: np.ndarray, episodes: list[tuple[np.ndarray, np.ndarray]], queries: int, classifier: str, logreg_c: float, logreg_max_iter: int,
) -> list[float]:
    """Query accuracy of each episode ``(support_idx [ways, shots], query_idx [ways * queries])``
    of ``features [N, D]``, classified by ``classifier``."""
    # An episode is a tiny problem: BLAS/OpenMP threads cost far more than they save
    # (a support-set fit takes ~2 ms on one thread and ~60 ms on two busy cores).
    accs = []
    with threadpool_limits(limits=1):
        for support_idx, query_idx in episodes:
            support, query = features[support_idx], features[query_idx]
            if classifier == "prototype":
                pred = _prototype_predict(support, query)
            elif classifier == "logreg":
                pred = _logreg_predict(support, query, logreg_c, logreg_max_iter)
            else:
                raise ValueError(f"unknown few-shot classifier {classifier!r}; valid: {list(CLASSIFIERS)}")
            accs.append(float((pred == np.repeat(np.arange(len(support_idx)), queries)).mean()))
    return accs


def _run_episodes(
    features: np.ndarray, episodes: list[tuple[np.ndarray, np.ndarray]], queries: int, classifier: str,
    logreg_c: float, logreg_max_iter: int, workers: int, desc: str,
) -> list[float]:
    """Each episode's accuracy, in order, computed in chunks: in ``workers`` processes for
    logistic regression (one L-BFGS fit per episode; the image default's 3,600 fits took
    8.8 s in one process and 5.0 s in two, benchmarks/few_shot.py), in this process for
    prototypes (0.7 s for the same episodes: less than a process pool costs to start)."""
    chunks = [episodes[i:i + 25] for i in range(0, len(episodes), 25)]
    args = (queries, classifier, logreg_c, logreg_max_iter)
    if workers > 1 and classifier == "logreg":
        from joblib import Parallel, delayed  # scikit-learn's own process pool, imported with it

        results = Parallel(n_jobs=workers, return_as="generator")(delayed(_episode_accuracies)(features, c, *args) for c in chunks)
    else:
        results = (_episode_accuracies(features, c, *args) for c in chunks)
    # a progress bar on a terminal only (tqdm disables itself when stderr is not a TTY)
    return [acc for chunk in tqdm(results, total=len(chunks), desc=desc, leave=False, disable=None) for acc in chunk]


def few_shot(
    features: np.ndarray, labels: np.ndarray, ways: int | str | None, shots: list[int], queries: int, episodes: int, seed: int,
    classifier: str = "prototype", logreg_c: float = 1.0, logreg_max_iter: int = 1000, workers: int = 1,
) -> dict:
    """Mean accuracy and 95% confidence interval (1.96 * std / sqrt(episodes)) per K.

    ``ways``: classes per episode, at most the number of classes (more raises
    ``ValueError``: capping would report a ways count that was not used); ``None`` or
    ``"all"`` means every class (all-way episodes). Keys are ``f"{ways}way_{k}shot"`` with
    the resolved number of ways (e.g. ``"10way_5shot"`` for all-way on 10 classes).
    ``classifier``: ``"prototype"`` (cosine similarity to the class means of the
    L2-normalised support features) or ``"logreg"`` (multinomial logistic regression,
    L-BFGS, inverse L2 strength ``logreg_c``, fit on the L2-normalised support features).
    The episodes of each K are fixed by ``seed`` and are the same for both classifiers.
    ``workers`` > 1 fits the logistic regressions in that many processes; the episodes
    and the results do not depend on it."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"unknown few-shot classifier {classifier!r}; valid: {list(CLASSIFIERS)}")
    classes, members = _class_members(labels)
    n_classes = len(classes)
    if ways is None or ways == "all":
        ways = n_classes
    elif isinstance(ways, str) or int(ways) < 2:
        raise ValueError(f"ways must be an integer >= 2, None or 'all', got {ways!r}")
    if n_classes < 2:
        raise ValueError(f"few-shot episodes need at least 2 classes; the labels hold {n_classes}")
    if int(ways) > n_classes:
        raise ValueError(f"{ways}-way episodes need {ways} classes; the labels hold {n_classes} (use ways <= {n_classes} or 'all')")
    ways = int(ways)
    smallest = min(len(m) for m in members)  # over the classes present
    out = {}
    for k in shots:
        if k < 1 or queries < 1:
            raise ValueError(f"few-shot episodes need shots >= 1 and queries >= 1; got {k}-shot with {queries} queries")
        if k + queries > smallest:
            raise ValueError(f"{k}-shot with {queries} queries needs {k + queries} images per class; the smallest class has {smallest}")
        rng = np.random.default_rng([seed, k])  # episodes of each K are fixed by the seed
        drawn = [_draw_episode(classes, members, ways, k, queries, rng) for _ in range(episodes)]
        accs = np.array(_run_episodes(features, drawn, queries, classifier, logreg_c, logreg_max_iter, workers,
                                      desc=f"few-shot {classifier} {ways}-way {k}-shot"))
        out[f"{ways}way_{k}shot"] = {"mean": float(accs.mean()), "ci95": float(1.96 * accs.std(ddof=1) / np.sqrt(episodes)) if episodes > 1 else 0.0}
    return out
