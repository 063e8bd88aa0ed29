"""Split conformal: the finite-sample quantile, LAC/APS/Mondrian sets, regression intervals,
coverage on exchangeable data, and the gate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.gates.conformal import (
    aps_scores,
    classifier_coverage,
    conformal_gate,
    conformal_quantile,
    lac_scores,
    regression_coverage,
)


def test_finite_sample_quantile_by_hand():
    scores = np.array([0.5, 0.1, 0.4, 0.3, 0.2])
    # n = 5, alpha = 0.2: ceil(6 * 0.8) = 5th smallest
    assert conformal_quantile(scores, 0.2) == 0.5
    # alpha = 0.5: ceil(6 * 0.5) = 3rd smallest
    assert conformal_quantile(scores, 0.5) == 0.3
    # alpha = 0.1: ceil(6 * 0.9) = 6 > n: every label is in the set
    assert conformal_quantile(scores, 0.1) == math.inf
    with pytest.raises(ValueError):
        conformal_quantile(np.array([]), 0.1)


def test_lac_and_aps_scores_by_hand():
    proba = np.array([[0.5, 0.3, 0.2]])
    assert lac_scores(proba)[0] == pytest.approx([0.5, 0.7, 0.8])
    # APS with u: class ranked r gets (mass above it) + u * p
    assert aps_scores(proba, np.array([1.0]))[0] == pytest.approx([0.5, 0.8, 1.0])
    assert aps_scores(proba, np.array([0.0]))[0] == pytest.approx([0.0, 0.5, 0.8])
    shuffled = np.array([[0.2, 0.5, 0.3]])
    assert aps_scores(shuffled, np.array([0.5]))[0] == pytest.approx([0.9, 0.25, 0.65])


def synthetic_classifier(n, k, rng):
    logits = rng.normal(size=(n, k)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(proba, axis=1)).sum(axis=1)
    return np.minimum(labels, k - 1), proba


@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(200, 2000), k=st.integers(2, 6), level=st.floats(0.7, 0.95),
       score=st.sampled_from(["lac", "aps"]), mondrian=st.booleans())
def test_coverage_holds_on_exchangeable_data(n, k, level, score, mondrian):
    # Marginal coverage >= level over the randomness of the split; averaged over 30 splits it
    # must not fall below the level by more than the Monte Carlo error allows.
    rng = np.random.default_rng(n * k)
    coverages = []
    for seed in range(30):
        labels, proba = synthetic_classifier(n, k, rng)
        found = classifier_coverage(labels, proba, level, score, mondrian, seed=seed)
        coverages.append(found.coverage)
    spread = np.sqrt(level * (1 - level) / (n / 2) / 30)
    assert np.mean(coverages) >= level - 4 * spread


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n=st.integers(200, 3000), level=st.floats(0.6, 0.95),
       score=st.sampled_from(["absolute", "normalized", "cqr"]))
def test_regression_coverage_holds_on_exchangeable_data(n, level, score):
    rng = np.random.default_rng(n)
    coverages = []
    for seed in range(30):
        x = rng.uniform(0, 4, n)
        noise = 0.2 + 0.5 * x
        y = np.sin(x) + rng.normal(0, noise)
        prediction = np.sin(x)
        found = regression_coverage(y, prediction, level, score, difficulty=noise,
                                    lower=prediction - noise, upper=prediction + noise,
                                    seed=seed)
        coverages.append(found.coverage)
        # and not wildly above: no ties, so coverage < level + 1/(n_cal + 1) in expectation
    spread = np.sqrt(level * (1 - level) / (n / 2) / 30)
    assert abs(np.mean(coverages) - level) <= 4 * spread + 2 / n


def test_binary_lac_fast_path_equals_the_matrix_path():
    rng = np.random.default_rng(7)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)
    vector = classifier_coverage(y, p, 0.9, "lac")
    matrix = classifier_coverage(y, np.column_stack([1 - p, p]), 0.9, "lac")
    assert vector.coverage == matrix.coverage and vector.quantile == matrix.quantile
    assert vector.mean_size == pytest.approx(matrix.mean_size)
    assert vector.per_class == matrix.per_class


def test_mondrian_covers_every_class():
    rng = np.random.default_rng(8)
    n = 20_000
    labels = rng.choice(3, n, p=[0.8, 0.15, 0.05])
    proba = np.tile([0.8, 0.15, 0.05], (n, 1))  # the same answer for everyone
    marginal = classifier_coverage(labels, proba, 0.9, "lac")
    per_class = classifier_coverage(labels, proba, 0.9, "lac", mondrian=True)
    assert marginal.per_class["2"]["coverage"] < 0.5  # marginal LAC abandons the rare class
    for name, found in per_class.per_class.items():
        assert found["coverage"] >= 0.85, name
    assert len(per_class.quantile) == 3


def test_regression_intervals_by_hand():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    prediction = np.array([1.5, 2.0, 2.0, 4.0])
    found = regression_coverage(y, prediction, 0.5, "absolute", calibration_fraction=0.5,
                                seed=0, ordered=True)
    # calibrate on the first two: residuals .5, 0 -> ceil(3 * .5) = 2nd smallest = .5
    assert found.quantile == 0.5 and found.mean_size == 1.0
    assert found.n_calibration == 2 and found.coverage == 0.5  # |3 - 2| = 1 > .5, |0| covered
    cqr = regression_coverage(y, None, 0.5, "cqr", lower=y - 1, upper=y + 1,
                              calibration_fraction=0.5, ordered=True)
    assert cqr.quantile == -1.0 and cqr.coverage == 1.0 and cqr.mean_size == 0.0
    with pytest.raises(ValueError, match="difficulty"):
        regression_coverage(y, prediction, 0.5, "normalized")


def test_the_gate():
    rng = np.random.default_rng(9)
    p = rng.random(40_000)
    y = (rng.random(40_000) < p).astype(int)
    good = classifier_coverage(y, p, 0.9)
    assert conformal_gate(good, 0.02, True).status == "pass"
    small = classifier_coverage(y[:300], p[:300], 0.9)
    assert conformal_gate(small, 0.02, True).status == "inconclusive"
    # a model whose test rows differ from its calibration rows: an ordered split where the
    # later half is noisier
    noisy = np.concatenate([p[:20_000], rng.random(20_000)])
    labels = np.concatenate([y[:20_000], (rng.random(20_000) < p[20_000:]).astype(int)])
    drifted = classifier_coverage(labels, noisy, 0.9, ordered=True)
    result = conformal_gate(drifted, 0.02, True)
    assert result.status == "fail" and result.observed < 0.88
    assert conformal_gate(None, 0.02, True).status == "skipped"
