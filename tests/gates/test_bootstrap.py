"""Bootstrap intervals, Clopper-Pearson, and the interval-to-verdict rules."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from shared.gates import bootstrap
from shared.gates.bootstrap import (
    band_status,
    below_threshold_status,
    bootstrap_intervals,
    clopper_pearson,
)


def weighted_mean_of(values):
    def statistics(rows, weights):
        return {"mean": weights @ values[rows] / weights.sum(axis=1)}
    return statistics


@pytest.mark.parametrize("n", [500, 5_000])
def test_exact_bootstrap_of_a_mean_matches_the_normal_interval(n):
    values = np.random.default_rng(n).exponential(size=n)
    found = bootstrap_intervals(weighted_mean_of(values), n, 0.95, 1000, seed=1)["mean"]
    half = 1.96 * values.std() / np.sqrt(n)
    assert found.method == "bootstrap"
    assert found.lower == pytest.approx(values.mean() - half, abs=0.25 * half)
    assert found.upper == pytest.approx(values.mean() + half, abs=0.25 * half)


def test_bag_of_little_bootstraps_above_the_exact_limit():
    n = 400_000
    values = np.random.default_rng(3).normal(5, 2, n)
    found = bootstrap_intervals(weighted_mean_of(values), n, 0.95, 200, seed=2)["mean"]
    half = 1.96 * 2 / np.sqrt(n)
    assert found.method == "bag-of-little-bootstraps"
    assert found.upper - found.lower == pytest.approx(2 * half, rel=0.2)
    assert found.lower < values.mean() < found.upper


def test_resamples_are_shared_so_differences_are_paired():
    n = 2_000
    rng = np.random.default_rng(4)
    first = rng.normal(size=n)
    second = first + 0.01  # perfectly correlated: the difference has no sampling noise

    def statistics(rows, weights):
        a = weights @ first[rows] / weights.sum(axis=1)
        b = weights @ second[rows] / weights.sum(axis=1)
        return {"a": a, "difference": b - a}

    found = bootstrap_intervals(statistics, n, 0.95, 300)
    assert found["difference"].lower == pytest.approx(0.01)
    assert found["difference"].upper == pytest.approx(0.01)
    assert found["a"].upper - found["a"].lower > 0.05


def test_bootstrap_needs_two_rows():
    with pytest.raises(ValueError, match="two rows"):
        bootstrap_intervals(weighted_mean_of(np.ones(1)), 1)


@pytest.mark.parametrize("k,n", [(0, 20), (3, 20), (18, 20), (20, 20), (900, 1000)])
def test_clopper_pearson_matches_scipy(k, n):
    expected = binomtest(k, n).proportion_ci(0.95, method="exact")
    found = clopper_pearson(k, n, 0.95)
    assert found.lower == pytest.approx(expected.low, abs=1e-10)
    assert found.upper == pytest.approx(expected.high, abs=1e-10)


def test_threshold_and_band_verdicts():
    assert below_threshold_status(0.0, 0.01, 0.02) == "pass"
    assert below_threshold_status(0.03, 0.05, 0.02) == "fail"
    assert below_threshold_status(0.02, 0.05, 0.02) == "fail"
    assert below_threshold_status(0.01, 0.03, 0.02) == "inconclusive"
    assert band_status(0.89, 0.91, 0.88, 0.92) == "pass"
    assert band_status(0.80, 0.85, 0.88, 0.92) == "fail"
    assert band_status(0.93, 0.95, 0.88, 0.92) == "fail"
    assert band_status(0.86, 0.90, 0.88, 0.92) == "inconclusive"
    assert bootstrap.Interval(0, 1, 0.95, "x").to_dict()["method"] == "x"
