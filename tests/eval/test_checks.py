"""Params that do not fit the shards are refused up front, naming the key, the value and the fix."""

import copy

import pytest

from pipeline.config import parse_params
from pipeline.errors import UserError
from pipeline.registry import PROTOCOLS
from pipeline.eval.checks import check_protocol_params

CLASSES = [f"c{i}" for i in range(10)]


def manifest(train=(41, 46, 37, 37, 42, 38, 42, 41, 41, 35), val=(21, 20, 20, 21, 17, 20, 24, 20, 17, 20),
             test=(32, 35, 39, 24, 30, 27, 28, 29, 29, 27)) -> dict:
    """The per-class counts of the tiny_shards fixture: train 400, val 200, test 300 (smallest 24)."""
    split = lambda counts: {"count": sum(counts), "per_class": dict(zip(CLASSES, counts))}  # noqa: E731
    return {"classes": CLASSES, "splits": {"pretrain": {"count": 400, "per_class": None},
                                           "train": split(train), "val": split(val), "test": split(test)}}


@pytest.fixture
def make_params(default_params_dict):
    def make(**sections):
        raw = copy.deepcopy(default_params_dict)
        for name, values in sections.items():
            raw[name].update(values)
        return parse_params(raw)
    return make


def test_default_params_fit_the_default_data(params):
    # README's default: 10k train, 5k val, 10k test over 10 classes
    big = manifest(train=(1000,) * 10, val=(500,) * 10, test=(1000,) * 10)
    for protocol in PROTOCOLS.names():
        check_protocol_params(protocol, params, big)


def test_knn_k_larger_than_the_bank(make_params):
    for protocol in ("knn",):
        with pytest.raises(UserError, match=r"^knn.ks: k=500 is larger than the kNN bank of 400 train images") as err:
            check_protocol_params(protocol, make_params(knn={"ks": [20, 500]}), manifest())
        assert "knn500_top1" in str(err.value) and "at most 400" in str(err.value)
    check_protocol_params("knn", make_params(knn={"ks": [20, 400]}), manifest())  # the whole bank is fine
    with pytest.raises(UserError, match=r"^knn.ks: k=0 is not a number of neighbours"):
        check_protocol_params("knn", make_params(knn={"ks": [0]}), manifest())
    check_protocol_params("few_shot", make_params(knn={"ks": [500]}, few_shot={"shots": [1]}), manifest())  # no kNN there


def test_few_shot_shots_plus_queries_larger_than_the_smallest_test_class(make_params):
    # defaults: shots [1, 5, 10] with 15 queries; 10 + 15 = 25 > 24 images of the smallest test class
    for protocol in ("few_shot",):
        with pytest.raises(UserError, match=r"^few_shot.shots: 10-shot episodes with few_shot.queries=15 need 25") as err:
            check_protocol_params(protocol, make_params(), manifest())
        assert "('c3') has 24" in str(err.value) and "between 1 and 9" in str(err.value)
    check_protocol_params("few_shot", make_params(few_shot={"shots": [1, 5, 9]}), manifest())
    with pytest.raises(UserError, match=r"^few_shot.queries: 24 queries plus at least 1 shot need 25"):
        check_protocol_params("few_shot", make_params(few_shot={"shots": [1], "queries": 24}), manifest())
    with pytest.raises(UserError, match=r"^few_shot.shots: 0-shot"):
        check_protocol_params("few_shot", make_params(few_shot={"shots": [0, 1]}), manifest())
    check_protocol_params("linear_eval", make_params(), manifest())  # no few-shot there


def test_few_shot_ways_larger_than_the_classes(make_params):
    ok = {"shots": [1], "queries": 5}
    with pytest.raises(UserError, match=r"^few_shot.ways: 11-way episodes need 11 classes, but the test split has 10"):
        check_protocol_params("few_shot", make_params(few_shot={**ok, "ways": [5, 11]}), manifest())
    with pytest.raises(UserError, match=r"^few_shot.ways: 1 is not a number of ways"):
        check_protocol_params("few_shot", make_params(few_shot={**ok, "ways": [1]}), manifest())
    check_protocol_params("few_shot", make_params(few_shot={**ok, "ways": [10, "all"]}), manifest())
    # a class absent from the test split is not a class of its episodes
    five = manifest(test=(30,) * 5 + (0,) * 5)
    with pytest.raises(UserError, match=r"^few_shot.ways: 6-way episodes need 6 classes, but the test split has 5"):
        check_protocol_params("few_shot", make_params(few_shot={**ok, "ways": [6]}), five)


def test_label_fraction_rounding_a_class_to_zero(make_params):
    # smallest val class: 17 images; 0.01 * 17 = 0.17 rounds to 0 (it would be raised to 1 image)
    with pytest.raises(UserError, match=r"^label_efficiency.fractions: 0.01 of the smallest val class \('c4', 17 images\)") as err:
        check_protocol_params("label_efficiency", make_params(label_efficiency={"fractions": [0.01, 0.5]}), manifest())
    assert "at least 0.03" in str(err.value)
    check_protocol_params("label_efficiency", make_params(label_efficiency={"fractions": [0.03, 0.5]}), manifest())
    # the train split is checked too: smallest train class 35 -> 0.0143 rounds to 0
    with pytest.raises(UserError, match=r"^label_efficiency.fractions: 0.0142 of the smallest train class \('c9', 35"):
        check_protocol_params("label_efficiency", make_params(label_efficiency={"fractions": [0.0142]}),
                              manifest(val=(100,) * 10))
    check_protocol_params("linear_eval", make_params(label_efficiency={"fractions": [0.001]}), manifest())


def test_fewer_than_two_classes_refused_for_every_protocol(params):
    one = manifest(test=(300,) + (0,) * 9)
    for protocol in PROTOCOLS.names():
        with pytest.raises(UserError, match=r"^the test split holds 1 class\(es\) \['c0'\]: the linear probe needs at least 2"):
            check_protocol_params(protocol, params, one)


def test_unknown_protocol_names_the_valid_ones(params):
    with pytest.raises(UserError, match=r"unknown evaluation protocol 'linear-eval'; valid protocols are \['linear_eval'"):
        check_protocol_params("linear-eval", params, manifest())
