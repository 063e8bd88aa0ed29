"""Mergeable summaries: the merge over any partition of the rows equals the summary of all rows,
and the gate math reads the same figures from them as from the rows."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from shared.gates import calibration, conformal, drift, fairness
from shared.gates.summaries import (
    PartitionedValues,
    conformal_rank,
    linear_quantiles,
    merge_tables,
    order_statistic,
    reliability_sums,
    score_histogram,
)

EDGES = np.linspace(0.0, 1.0, 16)


def split_points(n: int, cuts: list[int]) -> list[slice]:
    """Consecutive slices of range(n) cut at the given points (possibly empty parts)."""
    points = sorted({0, n, *(c % (n + 1) for c in cuts)})
    return [slice(a, b) for a, b in zip(points[:-1], points[1:], strict=True)]


rows = st.integers(min_value=1, max_value=400)
cuts = st.lists(st.integers(min_value=0, max_value=400), max_size=6)
seeds = st.integers(min_value=0, max_value=2**32 - 1)


@settings(max_examples=40, deadline=None)
@given(n=rows, cut=cuts, seed=seeds)
def test_reliability_tables_merge_to_the_whole(n, cut, seed):
    rng = np.random.default_rng(seed)
    confidence = rng.random(n)
    outcome = rng.random(n) < confidence
    whole = reliability_sums(confidence, outcome, EDGES)
    parts = [reliability_sums(confidence[s], outcome[s], EDGES) for s in split_points(n, cut)]
    merged = reduce(merge_tables, parts)
    assert np.array_equal(merged.counts, whole.counts)
    assert np.array_equal(merged.sum_outcome, whole.sum_outcome)
    for name in ("sum_confidence", "sum_confidence_squared", "sum_confidence_outcome"):
        assert np.allclose(getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=1e-12)
    assert merged.ece == pytest.approx(whole.ece, rel=1e-12, abs=1e-15)
    # the counts and sums of the gate's own table (equal-width bins; its sums add in another order)
    table = calibration.reliability_table(confidence, outcome, 15)
    assert np.array_equal(table.counts, whole.counts)
    assert np.allclose(table.sum_confidence, whole.sum_confidence, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(n=rows, cut=cuts, seed=seeds)
def test_psi_counts_merge_and_give_the_gates_psi(n, cut, seed):
    rng = np.random.default_rng(seed)
    reference, current = rng.normal(0, 1, n), rng.normal(0.3, 1, n)
    current[1:][rng.random(n - 1) < 0.05] = np.nan  # the first value stays
    whole = drift.psi_counts("x", reference, current)
    parts = []
    for part in split_points(n, cut):
        parts.append(drift.PsiCounts(
            "x", whole.inner, drift.counts_on_edges(reference[part], whole.inner),
            drift.counts_on_edges(current[part][~np.isnan(current[part])], whole.inner),
            0, int(np.isnan(current[part]).sum())))
    merged = reduce(lambda a, b: a + b, parts)
    assert np.array_equal(merged.reference, whole.reference)
    assert np.array_equal(merged.current, whole.current)
    assert merged.missing_current == whole.missing_current
    assert drift.psi_from_counts(merged).psi == drift.numeric_psi("x", reference, current).psi


@settings(max_examples=40, deadline=None)
@given(n=rows, cut=cuts, seed=seeds)
def test_group_confusion_merges_in_any_group_order(n, cut, seed):
    rng = np.random.default_rng(seed)
    groups = np.array(["a", "b", "c", None], dtype=object)[rng.integers(0, 4, n)]
    y, predicted = rng.random(n) < 0.4, rng.random(n) < 0.5
    parts = [fairness.group_confusion(y[s], predicted[s], groups[s])
             for s in split_points(n, cut) if s.stop > s.start]
    merged = reduce(lambda a, b: a + b, parts)
    whole = fairness.group_confusion(y, predicted, groups)
    assert sorted(merged.groups, key=str) == sorted(whole.groups, key=str)
    for row, group in enumerate(whole.groups):
        assert np.array_equal(merged.counts[merged.groups.index(group)], whole.counts[row])
    found = fairness.fairness_from_confusion(merged)
    expected = fairness.fairness_report(y, predicted, groups)
    assert found.demographic_parity_difference == expected.demographic_parity_difference
    assert found.equalized_odds_difference == expected.equalized_odds_difference


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=2, max_value=400), cut=cuts, seed=seeds)
def test_score_histograms_merge_and_bound_the_auc(n, cut, seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(n), 3)
    labels = (rng.random(n) < scores).astype(int)
    edges = np.linspace(0, 1, 257)
    whole = score_histogram(labels, scores, edges)
    merged = reduce(lambda a, b: a + b, [score_histogram(labels[s], scores[s], edges)
                                         for s in split_points(n, cut)])
    assert np.array_equal(merged.positive, whole.positive)
    assert np.array_equal(merged.negative, whole.negative)
    if 0 < labels.sum() < n:
        assert abs(merged.auc() - roc_auc_score(labels, scores)) <= whole.resolution() + 1e-12


def test_histogram_auc_is_exact_when_each_score_has_its_own_bin():
    scores = np.array([0.1, 0.2, 0.2, 0.4, 0.7, 0.9])
    labels = np.array([0, 1, 0, 0, 1, 1])
    edges = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.8, 0.9, 1.0])
    histogram = score_histogram(labels, scores, edges)
    assert histogram.auc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-15)


@settings(max_examples=60, deadline=None)
@given(n=rows, cut=cuts, seed=seeds, ties=st.booleans(), k_share=st.floats(0, 1))
def test_order_statistic_by_bucket_refinement_is_exact(n, cut, seed, ties, k_share):
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, n)
    if ties:
        values = np.round(values, 1)
    values[: n // 3] = values[: n // 3] * 1e-9  # a dense cluster: several refinement passes
    source = PartitionedValues([values[s] for s in split_points(n, cut)])
    k = 1 + int(k_share * (n - 1))
    found = order_statistic(source, k, float(values.min()), float(values.max()), n,
                            n_buckets=8, collect_limit=5)
    assert found == np.sort(values)[k - 1]


@settings(max_examples=30, deadline=None)
@given(n=rows, seed=seeds)
def test_linear_quantiles_from_order_statistics_are_bit_for_bit(n, seed):
    values = np.random.default_rng(seed).gamma(2.0, size=n)
    q = np.arange(1, 10) / 10
    source = PartitionedValues([values[: n // 2], values[n // 2:]])
    found = linear_quantiles(source, q, n, float(values.min()), float(values.max()),
                             n_buckets=16, collect_limit=10)
    assert np.array_equal(found, calibration.quantiles_unsorted(values, q))


def test_conformal_quantile_from_its_rank():
    scores = np.random.default_rng(3).random(1001)
    rank = conformal_rank(len(scores), 0.1)
    assert rank == math.ceil(1002 * 0.9)
    source = PartitionedValues([scores])
    assert order_statistic(source, rank, 0.0, 1.0, len(scores), 16, 10) == \
        conformal.conformal_quantile(scores, 0.1)
    assert conformal_rank(5, 0.01) is None  # +inf: too few calibration scores


@settings(max_examples=20, deadline=None)
@given(n=st.integers(min_value=20, max_value=400), cut=cuts, seed=seeds)
def test_coverage_counts_merge_over_test_rows(n, cut, seed):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    y = (rng.random(n) < p).astype(int)
    calibrate = np.arange(n) % 2 == 0
    report = conformal.classifier_coverage(y, p, 0.9, calibrate=calibrate)
    q = report.quantile
    parts = []
    for s in split_points(n, cut):
        test, labels, scores = ~calibrate[s], y[s], p[s]
        true_score = np.where(labels == 1, 1 - scores, scores)
        covered = (true_score <= q) & test
        parts.append(conformal.CoverageCounts(
            q, int(calibrate.sum()), int(test.sum()), int(covered.sum()),
            int(((scores <= q) & test).sum() + ((1 - scores <= q) & test).sum()),
            np.bincount(labels[test], minlength=2), np.bincount(labels, covered, minlength=2)))
    merged = reduce(lambda a, b: a + b, parts)
    rebuilt = conformal.coverage_from_counts(merged, "lac", 0.9)
    assert rebuilt.coverage == report.coverage and rebuilt.mean_size == report.mean_size
    assert rebuilt.per_class == report.per_class
