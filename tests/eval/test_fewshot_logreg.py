"""Few-shot with the logistic-regression classifier and all-way episodes, on constructed features."""

import numpy as np
import pytest

from pipeline.eval.algorithms.few_shot import few_shot


def separable(n_per_class=30, classes=10, dim=32, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 3
    y = np.repeat(np.arange(classes), n_per_class)
    return centers[y] + noise * rng.normal(size=(len(y), dim)), y


def legacy(features, labels, ways, shots, queries, episodes, seed, classifier="prototype"):
    """The original episode loop, restated: one episode at a time, drawn and classified in
    turn (nearest prototype, or scikit-learn's logistic regression with the protocol's C=1)."""
    from sklearn.linear_model import LogisticRegression

    norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    out = {}
    for k in shots:
        rng = np.random.default_rng([seed, k])
        accs = []
        for _ in range(episodes):
            classes = rng.choice(np.unique(labels), size=ways, replace=False)
            sup, qry, qy = [], [], []
            for j, c in enumerate(classes):
                idx = rng.choice(np.flatnonzero(labels == c), size=k + queries, replace=False)
                sup.append(features[idx[:k]])
                qry.append(features[idx[k:]])
                qy += [j] * queries
            if classifier == "prototype":
                protos = norm(np.stack([norm(s).mean(0) for s in sup]))
                pred = (norm(np.concatenate(qry)) @ protos.T).argmax(1)
            else:
                clf = LogisticRegression(C=1.0, max_iter=1000).fit(norm(np.concatenate(sup)), np.repeat(np.arange(ways), k))
                pred = clf.predict(norm(np.concatenate(qry)))
            accs.append(float((pred == np.array(qy)).mean()))
        accs = np.array(accs)
        out[f"{ways}way_{k}shot"] = {"mean": float(accs.mean()), "ci95": float(1.96 * accs.std(ddof=1) / np.sqrt(episodes))}
    return out


def test_default_prototype_is_unchanged():
    x, y = separable(noise=3.0)
    assert few_shot(x, y, 5, [1, 5], 5, 20, seed=2) == legacy(x, y, 5, [1, 5], 5, 20, seed=2)
    assert few_shot(x, y, 5, [1], 5, 20, seed=2, classifier="prototype") == legacy(x, y, 5, [1], 5, 20, seed=2)


def test_logreg_in_worker_processes_equals_the_episode_loop():
    """Two worker processes (a real process pool) fit the same episodes as the one-at-a-time
    loop and give the same accuracies, whatever the worker count."""
    x, y = separable(noise=8.0)
    expected = legacy(x, y, 5, [1, 5], 5, 60, seed=4, classifier="logreg")
    assert expected["5way_5shot"]["mean"] < 1.0  # not a trivially perfect problem
    assert few_shot(x, y, 5, [1, 5], 5, 60, seed=4, classifier="logreg", workers=2) == expected
    assert few_shot(x, y, 5, [1, 5], 5, 60, seed=4, classifier="logreg", workers=1) == expected


def test_logreg_separable_is_perfect():
    x, y = separable()
    res = few_shot(x, y, ways=5, shots=[1, 5], queries=10, episodes=20, seed=0, classifier="logreg")
    assert res["5way_1shot"]["mean"] == 1.0 and res["5way_5shot"]["mean"] == 1.0
    assert res["5way_5shot"]["ci95"] == 0.0
    everything = few_shot(x, y, ways="all", shots=[1], queries=10, episodes=10, seed=0, classifier="logreg")
    assert everything == {"10way_1shot": {"mean": 1.0, "ci95": 0.0}}


def test_all_way_random_features_is_chance():
    x, y = separable()
    noise = np.random.default_rng(3).normal(size=x.shape)
    for clf in ("prototype", "logreg"):
        res = few_shot(noise, y, ways=None, shots=[5], queries=10, episodes=200, seed=0, classifier=clf)
        assert list(res) == ["10way_5shot"]  # all-way: every one of the 10 classes in each episode
        r = res["10way_5shot"]
        assert abs(r["mean"] - 0.1) < 3 * r["ci95"] + 0.02, (clf, r)


def test_all_way_spellings_agree():
    x, y = separable(noise=3.0)
    a = few_shot(x, y, None, [1], 5, 10, seed=1)
    assert a == few_shot(x, y, "all", [1], 5, 10, seed=1) == few_shot(x, y, 10, [1], 5, 10, seed=1)
    # more ways than classes: refused (capping would report a "50way" count that was not used)
    with pytest.raises(ValueError, match="50-way episodes need 50 classes; the labels hold 10"):
        few_shot(x, y, 50, [1], 5, 10, seed=1)


def test_logreg_ci_shrinks_with_episodes():
    x, y = separable(noise=4.0)
    few = few_shot(x, y, 5, [1], 5, 30, seed=0, classifier="logreg")["5way_1shot"]["ci95"]
    many = few_shot(x, y, 5, [1], 5, 480, seed=0, classifier="logreg")["5way_1shot"]["ci95"]
    assert 0 < many < few / 2  # ~ 1/sqrt(16)


def test_logreg_beats_chance_on_noisy_features_and_is_seeded():
    x, y = separable(noise=2.0)
    a = few_shot(x, y, 5, [5], 5, 30, seed=7, classifier="logreg")["5way_5shot"]
    assert a["mean"] > 0.6  # chance 0.2
    assert a == few_shot(x, y, 5, [5], 5, 30, seed=7, classifier="logreg")["5way_5shot"]


def test_bad_arguments_are_clear():
    x, y = separable()
    with pytest.raises(ValueError, match="classifier"):
        few_shot(x, y, 5, [1], 5, 2, seed=0, classifier="svm")
    with pytest.raises(ValueError, match="ways"):
        few_shot(x, y, "some", [1], 5, 2, seed=0)
    with pytest.raises(ValueError, match="images per class"):
        few_shot(x, y, None, [25], 10, 2, seed=0, classifier="logreg")
    with pytest.raises(ValueError, match="shots >= 1"):
        few_shot(x, y, 5, [0], 5, 2, seed=0)
