"""Demographic parity and equalized odds differences against fairlearn."""

from __future__ import annotations

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from shared.gates.fairness import fairness_gate, fairness_report


@pytest.mark.parametrize("seed", range(5))
def test_matches_fairlearn(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1])
    y = (rng.random(n) < 0.4).astype(int)
    bias = np.where(groups == "a", 0.15, 0.0)
    predicted = (rng.random(n) < 0.3 + 0.4 * y + bias).astype(int)
    found = fairness_report(y, predicted, groups)
    assert found.demographic_parity_difference == pytest.approx(
        demographic_parity_difference(y, predicted, sensitive_features=groups))
    assert found.equalized_odds_difference == pytest.approx(
        equalized_odds_difference(y, predicted, sensitive_features=groups))
    assert sum(g["n"] for g in found.groups) == n


def test_groups_by_hand_and_missing_values():
    y = np.array([1, 0, 1, 0, 1, 0])
    predicted = np.array([1, 0, 0, 0, 1, 1])
    groups = np.array(["x", "x", "y", "y", None, None], dtype=object)
    found = fairness_report(y, predicted, groups)
    rates = {g["group"]: g for g in found.groups}
    assert set(rates) == {"x", "y", "missing"}
    assert rates["x"]["selection_rate"] == 0.5 and rates["y"]["selection_rate"] == 0.0
    assert rates["missing"]["false_positive_rate"] == 1.0
    assert found.demographic_parity_difference == 1.0
    assert found.equalized_odds_difference == 1.0


def test_gate():
    rng = np.random.default_rng(9)
    n = 4000
    groups = rng.choice(["a", "b"], n)
    y = (rng.random(n) < 0.5).astype(int)
    fair = fairness_report(y, y, groups)
    assert fairness_gate(fair, 0.1, 0.1, True).status == "pass"
    unfair = fairness_report(y, np.where(groups == "a", 1, y), groups)
    result = fairness_gate(unfair, 0.1, 0.1, True)
    assert result.status == "fail" and result.blocks
    assert "demographic parity" in result.detail and "equalized odds" in result.detail
    assert not fairness_gate(unfair, 0.1, 0.1, False).blocks
    assert fairness_gate(None, 0.1, 0.1, True).status == "skipped"
