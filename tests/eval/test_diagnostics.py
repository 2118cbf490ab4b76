"""Representation diagnostics on constructed embeddings whose values are known."""

import itertools
import math

import numpy as np
import pytest
import torch

from pipeline.config import AugmentParams, EncoderParams
from pipeline.modalities.image.views import ViewMaker
from pipeline.eval.algorithms.diagnostics import (
    alignment, collapsed, diagnose, effective_rank, embedding_std, infonce_loss, infonce_mi_lower_bound, uniformity,
)
from pipeline.models.encoder import Encoder
from tests.conftest import random_images


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian(n=4000, d=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_identical_pairs_have_zero_alignment():
    z = gaussian(100)
    assert alignment(z, z) == 0.0
    assert alignment(z, 5 * z) == pytest.approx(0.0, abs=1e-12)  # embeddings are normalised first
    assert alignment(z, -z) == pytest.approx(4.0)  # antipodal: ||2u||^2


def test_alignment_matches_naive_loop():
    a, b = gaussian(30, 8, 1), gaussian(30, 8, 2)
    ua, ub = unit(a), unit(b)
    naive = sum(np.linalg.norm(ua[i] - ub[i]) ** 2 for i in range(30)) / 30
    assert alignment(a, b) == pytest.approx(naive, rel=1e-10)
    naive3 = sum(np.linalg.norm(ua[i] - ub[i]) ** 3 for i in range(30)) / 30
    assert alignment(torch.from_numpy(a).float(), torch.from_numpy(b).float(), alpha=3) == pytest.approx(naive3, rel=1e-5)


def test_uniformity_matches_naive_loop_and_chunking():
    z = gaussian(25, 6, 3)
    u = unit(z)
    terms = [math.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i, j in itertools.combinations(range(25), 2)]
    naive = math.log(sum(terms) / len(terms))
    assert uniformity(z) == pytest.approx(naive, rel=1e-10)
    assert uniformity(z, chunk=4) == pytest.approx(naive, rel=1e-10)  # chunks cover each pair once
    t1 = [math.exp(-1 * np.sum((u[i] - u[j]) ** 2)) for i, j in itertools.combinations(range(25), 2)]
    assert uniformity(z, t=1.0, chunk=7) == pytest.approx(math.log(sum(t1) / len(t1)), rel=1e-10)


def test_collapsed_embedding():
    z = np.tile(np.random.default_rng(0).normal(size=(1, 32)), (200, 1))  # every row the same
    assert uniformity(z) == pytest.approx(0.0, abs=1e-12)
    std = embedding_std(z)
    assert std < 1e-6 and collapsed(std, 32)
    assert effective_rank(z) == 0.0
    assert alignment(z[:100], z[100:]) == pytest.approx(0.0, abs=1e-12)


def test_isotropic_gaussian():
    d = 16
    z = gaussian(4000, d)
    assert effective_rank(z) == pytest.approx(d, rel=0.02)
    std = embedding_std(z)
    assert std == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert not collapsed(std, d)
    assert uniformity(z[:800]) < -3.0  # spread over the sphere (collapse gives 0)


def test_effective_rank_of_low_rank_and_scaled_embeddings():
    rng = np.random.default_rng(4)
    low = rng.normal(size=(3000, 3)) @ rng.normal(size=(3, 32))  # rank 3 in 32 dims
    assert 1.0 <= effective_rank(low) <= 3.0 + 1e-6
    one_dir = rng.normal(size=(500, 1)) * np.ones((1, 8))
    assert effective_rank(one_dir) == pytest.approx(1.0, rel=1e-6)
    z = gaussian(2000, 8)
    assert effective_rank(z) == pytest.approx(effective_rank(1000 * z), rel=1e-9)  # scale-free


def test_infonce_bound():
    z = gaussian(64, 32, 5)
    perfect = infonce_loss(z, z, temperature=0.01)  # every anchor picks its positive with certainty
    assert perfect == pytest.approx(0.0, abs=1e-6)
    assert infonce_mi_lower_bound(perfect, 64) == pytest.approx(math.log(64), abs=1e-6)
    const = np.ones((64, 8))
    chance = infonce_loss(const, const)  # all candidates equally similar: loss = log K, bound 0
    assert chance == pytest.approx(math.log(64))
    assert infonce_mi_lower_bound(chance, 64) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        infonce_mi_lower_bound(0.0, 1)


def test_diagnose_on_an_encoder():
    torch.manual_seed(0)
    enc = Encoder(EncoderParams(width=4, layers=[1]), 1, [0.5], [0.25]).train()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    views = ViewMaker(AugmentParams(), seed=0, device=torch.device("cpu"))
    res = diagnose(enc, random_images(48), views, torch.device("cpu"))
    assert enc.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # eval mode: BN stats untouched
    assert 0 <= res["alignment"] <= 4 and res["uniformity"] <= 0
    assert 0 < res["effective_rank"] <= res["feature_dim"]
    assert res["mi_lower_bound"] <= math.log(48) + 1e-9 and res["infonce_k"] == 48
    assert res["std_sqrt_dim"] == pytest.approx(res["std"] * math.sqrt(res["feature_dim"]))
    assert isinstance(res["collapsed"], bool)
