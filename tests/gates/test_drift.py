"""PSI by hand, KS against scipy.stats.ks_2samp, chi-square and Jensen-Shannon against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from shared.gates.drift import (
    categorical_drift,
    drift_gate,
    drift_report,
    ks_p_value,
    ks_statistic_sorted,
    numeric_drift,
    numeric_psi,
    population_stability_index,
)


def test_psi_by_hand():
    reference = [50, 30, 20]
    current = [30, 30, 40]
    expected = (0.3 - 0.5) * np.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * np.log(0.4 / 0.2)
    assert population_stability_index(reference, current) == pytest.approx(expected)
    assert population_stability_index(reference, reference) == 0.0


def test_psi_floors_empty_bins_at_epsilon():
    found = population_stability_index([100, 0], [50, 50], epsilon=1e-4)
    expected = (1e-4 ** 0 * 0.5 - 1.0) * np.log(0.5 / 1.0) + (0.5 - 1e-4) * np.log(0.5 / 1e-4)
    assert found == pytest.approx(expected)
    assert np.isfinite(found)


def test_numeric_psi_uses_reference_deciles():
    reference = np.arange(1000, dtype=float)
    current = np.concatenate([np.arange(500, dtype=float), np.full(500, 2000.0)])
    found = numeric_drift("x", reference, current, n_bins=10)
    assert [b["reference"] for b in found.bins] == pytest.approx([0.1] * 10)
    # the current half below 500 fills the first five deciles, the rest lies above them all
    assert [b["current"] for b in found.bins] == pytest.approx([0.1] * 5 + [0, 0, 0, 0, 0.5])
    assert found.psi > 0.2


def test_missing_values_are_a_bin_of_their_own():
    reference = np.array([1.0, 2.0, 3.0, 4.0] * 25)
    current = np.array([1.0, 2.0, np.nan, 4.0] * 25)
    found = numeric_drift("x", reference, current, n_bins=4)
    assert found.bins[-1] == {"bin": "missing", "reference": 0.0, "current": 0.25}
    assert found.statistic == pytest.approx(ks_2samp(reference, current[~np.isnan(current)])
                                            .statistic)


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.integers(1, 80), elements=st.integers(-5, 5).map(float)
              | st.floats(-10, 10) | st.just(np.nan)),
       arrays(np.float64, st.integers(1, 80), elements=st.integers(-5, 5).map(float)
              | st.floats(-10, 10) | st.just(np.nan)),
       st.integers(2, 20))
def test_the_psi_only_path_gives_the_same_psi_and_bins_without_sorting(reference, current,
                                                                       n_bins):
    if np.isnan(reference).all() or np.isnan(current).all():
        with pytest.raises(ValueError, match="no non-missing values"):
            numeric_psi("x", reference, current, n_bins)
        return
    sorted_path = numeric_drift("x", reference, current, n_bins)
    psi_only = numeric_psi("x", reference, current, n_bins)
    assert psi_only.psi == sorted_path.psi  # bit for bit
    assert psi_only.bins == sorted_path.bins
    assert (psi_only.test, psi_only.statistic, psi_only.p_value) == ("none", None, None)


def test_the_policy_turns_the_ks_test_off():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=2000), "b": rng.normal(size=2000)})
    shifted = frame + 0.5
    with_ks = drift_report(frame, shifted)
    psi_only = drift_report(frame, shifted, ks=False)
    assert [d.psi for d in psi_only] == [d.psi for d in with_ks]
    assert {d.test for d in psi_only} == {"none"} and {d.test for d in with_ks} == {"ks"}
    assert drift_gate(psi_only, 0.1, 0.2, True).status == drift_gate(with_ks, 0.1, 0.2,
                                                                     True).status


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 80), elements=st.integers(-5, 5).map(float)
              | st.floats(-10, 10)),
       arrays(np.float64, st.integers(1, 80), elements=st.integers(-5, 5).map(float)
              | st.floats(-10, 10)),
       st.sampled_from([1, 2, 3, 64]))
def test_ks_statistic_matches_scipy(first, second, stride):
    with np.errstate(divide="ignore"):  # scipy's p-value for one-element samples
        expected = ks_2samp(first, second, method="asymp").statistic
    # small strides take the coarse-then-refine path that large samples take
    assert ks_statistic_sorted(np.sort(first), np.sort(second), stride) == pytest.approx(
        expected, abs=1e-12)


def test_ks_statistic_on_large_samples_matches_scipy():
    rng = np.random.default_rng(11)
    for shift, ties in ((0.0, False), (0.003, False), (0.2, False), (0.0, True)):
        a, b = rng.normal(0, 1, 200_000), rng.normal(shift, 1, 150_000)
        if ties:
            a, b = np.round(a, 2), np.round(b, 2)
        expected = ks_2samp(a, b, method="asymp").statistic
        assert ks_statistic_sorted(np.sort(a), np.sort(b)) == pytest.approx(expected, abs=1e-12)


def test_ks_p_value_matches_scipy_and_its_large_sample_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 3000), rng.normal(0.1, 1, 2000)
    found = numeric_drift("x", a, b)
    expected = ks_2samp(a, b, method="asymp")
    assert found.statistic == pytest.approx(expected.statistic)
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-6)
    # above the exact size: Stephens' form of the limiting distribution, close to kstwo
    from scipy.stats import kstwo
    for d in (0.01, 0.02, 0.03):
        assert ks_p_value(d, 60_000, 40_000) == pytest.approx(kstwo.sf(d, 24_000), rel=0.02)


def test_categorical_drift_matches_scipy():
    reference = np.array(["a"] * 500 + ["b"] * 300 + ["c"] * 200, dtype=object)
    current = np.array(["a"] * 300 + ["b"] * 300 + ["c"] * 350 + ["d"] * 50, dtype=object)
    found = categorical_drift("segment", reference, current)
    table = np.array([[500, 300, 200, 0], [300, 300, 350, 50]])
    expected = chi2_contingency(table, correction=False)
    assert found.statistic == pytest.approx(expected.statistic)
    assert found.p_value == pytest.approx(expected.pvalue)
    assert found.js_distance == pytest.approx(
        jensenshannon(table[0] / 1000, table[1] / 1000, base=2))
    assert {b["bin"] for b in found.bins} == {"a", "b", "c", "d"}
    assert found.psi == pytest.approx(population_stability_index(table[0], table[1]))


def frames(shift: float, n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    reference = pd.DataFrame({"x": rng.normal(0, 1, n), "z": rng.exponential(1, n),
                              "segment": rng.choice(["u", "v", "w"], n),
                              "flag": rng.random(n) < 0.3})
    current = pd.DataFrame({"x": rng.normal(shift, 1, n), "z": rng.exponential(1, n),
                            "segment": rng.choice(["u", "v", "w"], n),
                            "flag": rng.random(n) < 0.3})
    return reference, current


def test_drift_report_types_and_gate_statuses():
    reference, current = frames(0.0)
    report = drift_report(reference, current)
    kinds = {d.column: d.kind for d in report}
    assert kinds == {"x": "numeric", "z": "numeric", "segment": "categorical",
                     "flag": "categorical"}
    assert drift_gate(report, 0.1, 0.2, True).status == "pass"
    moderate = drift_report(*frames(0.6))
    assert drift_gate(moderate, 0.1, 0.2, True).status in ("warn", "fail")
    shifted = drift_report(*frames(1.5))
    result = drift_gate(shifted, 0.1, 0.2, True)
    assert result.status == "fail" and result.blocks and "x" in result.detail
    assert result.observed == max(d.psi for d in shifted)
    declared = drift_report(reference, current, ["z"], categorical_columns=["z"])
    assert declared[0].kind == "categorical"


def test_warning_thresholds_and_skips():
    reference, current = frames(0.15)
    report = drift_report(reference, current)
    assert drift_gate(report, 0.1, 0.2, True).status == "pass"
    warned = drift_gate(report, 0.1, 0.2, True, ks_warn=0.03)
    assert warned.status == "warn" and not warned.blocks
    assert drift_gate(None, 0.1, 0.2, True).status == "skipped"
    assert drift_gate([], 0.1, 0.2, True).status == "skipped"
