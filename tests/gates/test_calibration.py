"""ECE, reliability tables and the calibration gates, against hand-computed cases and
scikit-learn's calibration_curve (same binning rule, same per-bin frequencies)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.calibration import calibration_curve

from shared.gates import calibration
from shared.gates.calibration import (
    assess_calibration,
    bin_edges,
    bin_index,
    calibration_tracks,
    ece_gate,
    expected_calibration_error,
    reliability_gate,
    reliability_table,
)


def test_ece_by_hand():
    # Two bins of width 0.5. Bin (0, .5]: confidences .2, .4 -> mean .3, outcomes 0, 1 -> .5,
    # gap .2. Bin (.5, 1]: .6, .8, 1.0 -> mean .8, outcomes 1, 1, 1 -> 1.0, gap .2.
    confidence = np.array([0.2, 0.4, 0.6, 0.8, 1.0])
    outcome = np.array([0, 1, 1, 1, 1])
    table = reliability_table(confidence, outcome, n_bins=2)
    assert table.counts.tolist() == [2, 3]
    assert table.mean_confidence == pytest.approx([0.3, 0.8])
    assert table.observed_frequency == pytest.approx([0.5, 1.0])
    assert table.ece == pytest.approx(2 / 5 * 0.2 + 3 / 5 * 0.2)
    assert table.mce == pytest.approx(0.2)


def test_a_confidence_on_an_edge_goes_to_the_lower_bin_as_in_calibration_curve():
    edges = np.linspace(0, 1, 11)
    values = np.array([0.0, 0.1, 0.3, edges[3], 0.30000001, 0.7, 1.0])
    assert bin_index(values, edges).tolist() == np.searchsorted(edges[1:-1], values).tolist()
    assert bin_index(values, edges).tolist() == [0, 0, 2, 2, 3, 6, 9]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 300), elements=st.floats(0, 1)),
       st.integers(2, 40), st.sampled_from(["equal_width", "equal_mass"]))
def test_bin_index_is_searchsorted(values, n_bins, binning):
    edges = bin_edges(values, n_bins, binning)
    assert np.array_equal(bin_index(values, edges), np.searchsorted(edges[1:-1], values))


@pytest.mark.parametrize("strategy,binning", [("uniform", "equal_width"),
                                              ("quantile", "equal_mass")])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_table_matches_sklearn_calibration_curve(strategy, binning, n_bins):
    rng = np.random.default_rng(n_bins)
    p = rng.beta(2, 5, 3000)
    y = (rng.random(3000) < p ** 0.8).astype(int)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    table = reliability_table(p, y, n_bins, binning)
    filled = table.counts > 0
    assert table.observed_frequency[filled] == pytest.approx(prob_true, abs=1e-12)
    assert table.mean_confidence[filled] == pytest.approx(prob_pred, abs=1e-12)
    # and the ECE is the count-weighted mean |gap| of exactly those bins
    weights = table.counts[filled] / len(p)
    assert table.ece == pytest.approx(np.sum(weights * np.abs(prob_true - prob_pred)))


def test_equal_mass_edges_are_numpy_linear_quantiles():
    values = np.random.default_rng(1).random(1001)
    assert bin_edges(values, 7, "equal_mass") == pytest.approx(
        np.quantile(values, np.linspace(0, 1, 8)))


def test_top_label_and_classwise_by_hand():
    proba = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    labels = np.array([0, 0, 2, 0])
    # top label: confidences .7 .6 .6 .5, correct 1 0 1 1; with two bins (0,.5] and (.5,1]:
    # bin 1 {.5}: conf .5 acc 1 -> .5 ; bin 2 {.7,.6,.6}: conf .6333 acc .6667 -> .0333
    top = expected_calibration_error(labels, proba, "top_label", n_bins=2)
    assert top == pytest.approx(1 / 4 * 0.5 + 3 / 4 * abs(1.9 / 3 - 2 / 3))
    per_class = [expected_calibration_error((labels == k).astype(int), proba[:, k], "binary",
                                            n_bins=2) for k in range(3)]
    assert expected_calibration_error(labels, proba, "classwise", n_bins=2) == \
        pytest.approx(np.mean(per_class))


def test_binary_kinds():
    p = np.array([0.9, 0.2, 0.6, 0.4])
    y = np.array([1, 0, 0, 1])
    (name, confidence, outcome), = calibration_tracks(y, p, "top_label")
    assert confidence == pytest.approx([0.9, 0.8, 0.6, 0.6])
    assert outcome.tolist() == [True, True, False, False]
    (name, confidence, outcome), = calibration_tracks(y, np.column_stack([1 - p, p]), "binary")
    assert confidence == pytest.approx(p) and outcome.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="two classes"):
        calibration_tracks(np.zeros(2, int), np.full((2, 3), 1 / 3), "binary")


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 400), st.integers(0, 2**32 - 1), st.integers(2, 30),
       st.sampled_from(["equal_width", "equal_mass"]), st.sampled_from(["binary", "top_label",
                                                                         "classwise"]))
def test_ece_lies_in_0_1(n, seed, n_bins, binning, kind):
    rng = np.random.default_rng(seed)
    p = rng.random(n) ** rng.uniform(0.2, 5)
    y = rng.integers(0, 2, n)
    ece = expected_calibration_error(y, p, kind, n_bins, binning)
    assert 0.0 <= ece <= 1.0


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(300, 3000), a=st.floats(0.3, 5), b=st.floats(0.3, 5),
       kind=st.sampled_from(["binary", "top_label"]))
def test_perfectly_calibrated_scores_give_an_interval_covering_zero(n, a, b, kind):
    # Labels drawn from the scores themselves: the true calibration error is 0. At the 95% level
    # the interval must cover 0 in (about) 95% of holdouts; require it in at least 16 of 20.
    rng = np.random.default_rng(n)
    covered = 0
    for repeat in range(20):
        p = rng.beta(a, b, n)
        y = (rng.random(n) < p).astype(int)
        found = assess_calibration(y, p, kind, n_boot=100, seed=repeat)
        assert found.lower <= found.ece <= found.upper
        covered += found.lower == 0.0
    assert covered >= 16


def test_moment_and_exact_intervals_agree(monkeypatch):
    rng = np.random.default_rng(5)
    p = rng.beta(2, 2, 20_000)
    y = (rng.random(20_000) < np.clip(p * 1.1 - 0.05, 0, 1)).astype(int)
    exact = assess_calibration(y, p, n_boot=300)
    assert exact.method == "exact"
    monkeypatch.setattr(calibration, "EXACT_LIMIT", 100)
    moments = assess_calibration(y, p, n_boot=300)
    assert moments.method == "moments"
    assert moments.ece == exact.ece
    assert moments.upper == pytest.approx(exact.upper, rel=0.1)
    assert moments.null_quantile == pytest.approx(exact.null_quantile, rel=0.15)


def test_the_ece_gate_passes_a_calibrated_model_on_a_large_holdout():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, 60_000)
    y = (rng.random(60_000) < p).astype(int)
    result = ece_gate(assess_calibration(y, p), 0.02, True)
    assert result.status == "pass" and not result.blocks
    assert result.evidence["upper"] < 0.02 and result.observed < 0.02


def test_the_ece_gate_refuses_an_over_confident_model():
    rng = np.random.default_rng(1)
    p = rng.beta(2, 2, 5_000)
    y = (rng.random(5_000) < p).astype(int)
    over_confident = np.clip(0.5 + (p - 0.5) * 1.8, 0.001, 0.999)
    result = ece_gate(assess_calibration(y, over_confident), 0.02, True)
    assert result.status == "fail" and result.blocks
    assert result.evidence["lower"] >= 0.02


def test_a_small_holdout_is_inconclusive_not_a_pass():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 2, 400)
    y = (rng.random(400) < p).astype(int)
    assessment = assess_calibration(y, p)
    result = ece_gate(assessment, 0.02, True)
    assert result.status == "inconclusive" and result.blocks
    assert "too small" in result.detail
    assert not ece_gate(assessment, 0.02, False).blocks


def test_reliability_gate_reports_small_bins_and_judges_the_rest():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0.3, 0.7, 100_000), [0.97, 0.98, 0.99]])
    y = (rng.random(len(p)) < p).astype(int)
    result = reliability_gate(assess_calibration(y, p), 0.05, 10, True)
    assert result.status == "pass"
    assert any("(n=3)" in small for small in result.evidence["too_small"])
    assert "too small to judge" in result.detail


def test_reliability_gate_fails_a_deviating_bin():
    rng = np.random.default_rng(4)
    p = rng.uniform(0, 1, 50_000)
    y = (rng.random(50_000) < np.where(p > 0.8, p - 0.15, p)).astype(int)
    result = reliability_gate(assess_calibration(y, p), 0.05, 10, True)
    assert result.status == "fail"
    assert result.observed > 0.1
    assert "deviate" in result.detail


def test_reliability_gate_with_no_judgeable_bin_is_inconclusive():
    p = np.array([0.2, 0.4, 0.6, 0.8])
    y = np.array([0, 1, 1, 0])
    result = reliability_gate(assess_calibration(y, p, n_boot=50), 0.05, 10, True)
    assert result.status == "inconclusive"
    assert len(result.evidence["too_small"]) == 4


def test_missing_probabilities_skip_the_gates():
    assert ece_gate(None, 0.02, True).status == "skipped"
    assert reliability_gate(None, 0.05, 10, True).status == "skipped"
    with pytest.raises(ValueError, match="no rows"):
        assess_calibration(np.array([], int), np.array([]))


def test_sampled_second_moments_are_close_to_exact():
    rng = np.random.default_rng(6)
    p = rng.beta(2, 5, 300_000)
    y = (rng.random(300_000) < p).astype(int)
    table = reliability_table(p, y, 15, moments=True)
    index = np.searchsorted(table.edges[1:-1], p)
    exact = np.bincount(index, weights=p * p, minlength=15)
    filled = table.counts > 100
    assert table.sum_confidence_squared[filled] == pytest.approx(exact[filled], rel=1e-2)


def test_an_inconclusive_ece_gate_says_how_many_rows_would_resolve_it():
    rng = np.random.default_rng(2)
    p = rng.beta(2, 2, 400)
    y = (rng.random(400) < p).astype(int)
    result = ece_gate(assess_calibration(y, p), 0.02, True)
    needed = result.evidence["rows_to_resolve"]
    assert result.evidence["rows"] == 400 and needed > 400
    assert f"a well-calibrated model needs about {needed} rows to pass" in result.detail
    # A calibrated model on a little more than that passes (the figure is rough, not too low).
    big = rng.beta(2, 2, int(needed * 1.2))
    labels = (rng.random(big.size) < big).astype(int)
    assert ece_gate(assess_calibration(labels, big), 0.02, True).status == "pass"


def test_rows_to_resolve_follows_the_interval_width():
    from shared.gates.calibration import rows_to_resolve

    # An upper end twice the threshold: four times the rows.
    assert rows_to_resolve(0.04, 0.02, 1000) == 4000
    assert rows_to_resolve(0.01, 0.02, 1000) == 1001
    assert rows_to_resolve(0.04, 0.0, 1000) is None
