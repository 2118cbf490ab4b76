"""Protocols on constructed features whose answer is known, and on tiny real data."""

import numpy as np
import pytest

from pipeline.eval.algorithms.few_shot import few_shot
from pipeline.eval.algorithms.knn import knn_accuracy
from pipeline.eval.algorithms.linear import linear_probe


def separable(n_per_class=60, classes=10, dim=32, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return centers[y] + noise * rng.normal(size=(len(y), dim)), y


def split3(x, y, seed=0):
    idx = np.random.default_rng(seed).permutation(len(y))
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return [(x[i], y[i]) for i in (idx[:a], idx[a:b], idx[b:])]


def test_linear_probe_separable_is_perfect():
    res = linear_probe(*split3(*separable()), c_grid=[0.1, 1.0], max_iter=200)
    assert res["top1"] == 1.0 and res["top5"] == 1.0


def test_linear_probe_random_labels_is_chance():
    x, _ = separable()
    y = np.random.default_rng(1).integers(0, 10, len(x))
    res = linear_probe(*split3(x, y), c_grid=[0.01, 1.0], max_iter=200)
    assert res["top1"] < 0.25  # chance is 0.10


def test_linear_probe_path_matches_cold_fits():
    """The warm-started C path (each fit from the previous C's solution, the refit from the
    chosen C's) lands where independent fits do, once L-BFGS converges."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, val, test = split3(*separable(noise=8.0))  # overlapping classes: C matters (val 41% to 63%)
    grid = [0.001, 0.01, 0.1, 1.0]
    res = linear_probe(train, val, test, c_grid=grid, max_iter=5000)
    scaler = StandardScaler().fit(train[0])
    for c in grid:
        cold = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(scaler.transform(train[0]), train[1])
        assert abs(res["val_top1_by_c"][str(c)] - cold.score(scaler.transform(val[0]), val[1])) <= 1 / len(val[1])
    x_all, y_all = np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]])
    scaler = StandardScaler().fit(x_all)
    cold = LogisticRegression(C=res["best_c"], max_iter=5000, tol=1e-8).fit(scaler.transform(x_all), y_all)
    assert abs(res["top1"] - cold.score(scaler.transform(test[0]), test[1])) <= 1 / len(test[1])


def test_knn_separable_and_random():
    x, y = separable()
    (xtr, ytr), _, (xte, yte) = split3(x, y)
    assert knn_accuracy(xtr, ytr, xte, yte, k=20, temperature=0.07) == 1.0
    yr = np.random.default_rng(2).integers(0, 10, len(ytr))
    assert knn_accuracy(xtr, yr, xte, yte, k=20, temperature=0.07) < 0.3


def test_knn_refuses_k_outside_the_bank():
    # capping k at the bank would report "knn500" for a vote over fewer neighbours
    x, y = separable()
    bank, labels = x[:30], y[:30]
    # the whole bank is fine: its 30 items are all class 0, so every query is called class 0
    assert knn_accuracy(bank, labels, x, y, k=30, temperature=0.07) == pytest.approx(np.mean(y == 0))
    for k in (31, 0):
        with pytest.raises(ValueError, match=f"k={k} for a bank of 30 items"):
            knn_accuracy(bank, labels, x, y, k=k, temperature=0.07)


def test_few_shot_separable_and_random():
    x, y = separable(n_per_class=40)
    res = few_shot(x, y, ways=5, shots=[1, 5], queries=15, episodes=50, seed=0)
    assert res["5way_1shot"]["mean"] == 1.0 and res["5way_5shot"]["ci95"] == 0.0
    noise = np.random.default_rng(3).normal(size=x.shape)
    chance = few_shot(noise, y, ways=5, shots=[5], queries=15, episodes=300, seed=0)["5way_5shot"]
    assert abs(chance["mean"] - 0.2) < 3 * chance["ci95"] + 0.02


def test_few_shot_ci_shrinks_with_episodes():
    x, y = separable(n_per_class=40, noise=4.0)
    few = few_shot(x, y, 5, [1], 15, 50, seed=0)["5way_1shot"]["ci95"]
    many = few_shot(x, y, 5, [1], 15, 800, seed=0)["5way_1shot"]["ci95"]
    assert many < few / 2  # ~ 1/sqrt(16)


def test_few_shot_episodes_fixed_by_seed():
    x, y = separable(noise=3.0)
    assert few_shot(x, y, 5, [1], 5, 30, seed=4) == few_shot(x, y, 5, [1], 5, 30, seed=4)


def test_few_shot_too_few_images_is_clear():
    x, y = separable(n_per_class=10)
    with pytest.raises(ValueError, match="images per class"):
        few_shot(x, y, 5, [5], 15, 10, seed=0)
