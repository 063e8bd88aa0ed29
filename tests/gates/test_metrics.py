"""Metrics and their bootstrap replicates against scikit-learn (sample_weight = resample counts),
and the comparison gate."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as sk

from shared.gates.comparison import compare_metrics, comparison_gate, metric_key
from shared.gates.metrics import metric_replicates, metric_value
from shared.gates.policy import MetricSpec


def binary_case(n=600, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    if ties:
        p = np.round(p, 1)
    y = (rng.random(n) < p).astype(int)
    return y, p


def sklearn_binary(name, y, p, w=None, threshold=0.5):
    predicted = (p >= threshold).astype(int)
    return {
        "auc": lambda: sk.roc_auc_score(y, p, sample_weight=w),
        "accuracy": lambda: sk.accuracy_score(y, predicted, sample_weight=w),
        "f1": lambda: sk.f1_score(y, predicted, sample_weight=w, zero_division=0),
        "precision": lambda: sk.precision_score(y, predicted, sample_weight=w, zero_division=0),
        "recall": lambda: sk.recall_score(y, predicted, sample_weight=w, zero_division=0),
        "log_loss": lambda: sk.log_loss(y, p, sample_weight=w),
        "brier": lambda: sk.brier_score_loss(y, p, sample_weight=w),
    }[name]()


BINARY = ["auc", "accuracy", "f1", "precision", "recall", "log_loss", "brier"]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("name", BINARY)
def test_binary_metrics_match_sklearn(name, ties):
    y, p = binary_case(ties=ties)
    assert metric_value(name, "binary_classification", y, p) == pytest.approx(
        sklearn_binary(name, y, p), rel=1e-9)
    assert metric_value(name, "binary_classification", y, p, threshold=0.3) == pytest.approx(
        sklearn_binary(name, y, p, threshold=0.3), rel=1e-9)


@pytest.mark.parametrize("name", BINARY)
def test_binary_replicates_match_sklearn_sample_weight(name):
    y, p = binary_case(200, seed=1, ties=True)
    weights = np.random.default_rng(2).poisson(1.0, size=(4, 200)).astype(float)
    found = metric_replicates(name, "binary_classification", y, p, weights)
    expected = [sklearn_binary(name, y, p, w) for w in weights]
    assert found == pytest.approx(expected, rel=1e-9)


def multiclass_case(n=500, k=4, seed=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in proba])
    return y, proba


def test_multiclass_metrics_match_sklearn():
    y, proba = multiclass_case()
    weights = np.random.default_rng(4).poisson(1.0, size=(3, len(y))).astype(float)
    predicted = proba.argmax(axis=1)
    onehot = np.eye(proba.shape[1])[y]
    cases = {
        "accuracy": lambda w: sk.accuracy_score(y, predicted, sample_weight=w),
        "f1": lambda w: sk.f1_score(y, predicted, average="macro", sample_weight=w),
        "log_loss": lambda w: sk.log_loss(y, proba, sample_weight=w),
        "auc": lambda w: sk.roc_auc_score(y, proba, multi_class="ovr", average="macro",
                                          sample_weight=w),
        "brier": lambda w: np.average(((proba - onehot) ** 2).sum(axis=1), weights=w),
    }
    for name, expected in cases.items():
        assert metric_value(name, "multiclass_classification", y, proba) == pytest.approx(
            expected(None), rel=1e-9), name
        found = metric_replicates(name, "multiclass_classification", y, proba, weights)
        assert found == pytest.approx([expected(w) for w in weights], rel=1e-9), name


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    y = rng.normal(size=300)
    prediction = y + rng.normal(0, 0.5, 300)
    weights = rng.poisson(1.0, size=(3, 300)).astype(float)
    cases = {
        "rmse": lambda w: np.sqrt(sk.mean_squared_error(y, prediction, sample_weight=w)),
        "mae": lambda w: sk.mean_absolute_error(y, prediction, sample_weight=w),
        "r2": lambda w: sk.r2_score(y, prediction, sample_weight=w),
    }
    for name, expected in cases.items():
        assert metric_value(name, "regression", y, prediction) == pytest.approx(expected(None))
        found = metric_replicates(name, "regression", y, prediction, weights)
        assert found == pytest.approx([expected(w) for w in weights]), name


def test_metric_not_for_the_task():
    with pytest.raises(ValueError, match="regressor"):
        metric_value("auc", "regression", np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="binary"):
        metric_value("rmse", "binary_classification", np.ones(3), np.ones(3) / 2)


SPECS = [MetricSpec(name="auc"), MetricSpec(name="log_loss"), MetricSpec(name="accuracy")]


def two_models(n, candidate_noise, champion_noise, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.random(n)
    y = (rng.random(n) < truth).astype(int)
    candidate = np.clip(truth + rng.normal(0, candidate_noise, n), 0.01, 0.99)
    champion = np.clip(truth + rng.normal(0, champion_noise, n), 0.01, 0.99)
    return y, candidate, champion


def test_a_better_candidate_passes():
    y, candidate, champion = two_models(30_000, 0.05, 0.25)
    found = compare_metrics("binary_classification", y, candidate, champion, SPECS)
    assert [c.status for c in found] == ["pass"] * 3
    assert all(c.improvement > 0 for c in found)
    result = comparison_gate(found, True)
    assert result.status == "pass" and result.observed == 0


def test_a_clearly_worse_candidate_fails():
    y, candidate, champion = two_models(30_000, 0.3, 0.05)
    found = compare_metrics("binary_classification", y, candidate, champion, SPECS)
    assert {c.status for c in found} == {"fail"}
    assert all(c.improvement_interval.upper < 0 for c in found)
    result = comparison_gate(found, True)
    assert result.status == "fail" and result.blocks and "auc" in result.detail


def test_a_slightly_worse_candidate_on_a_small_holdout_is_inconclusive():
    y, _, champion = two_models(400, 0.1, 0.1, seed=11)
    candidate = champion.copy()
    candidate[0] = 0.99 if y[0] == 0 else 0.01  # worse on one row only: the holdout cannot say
    found = compare_metrics("binary_classification", y, candidate, champion,
                            [MetricSpec(name="log_loss")])
    assert found[0].improvement < 0
    assert found[0].status == "inconclusive"
    assert comparison_gate(found, True).status == "inconclusive"


def test_tolerance_absolute_and_relative():
    y, candidate, champion = two_models(30_000, 0.3, 0.05)
    auc = metric_value("auc", "binary_classification", y, champion) - \
        metric_value("auc", "binary_classification", y, candidate)
    loose = [MetricSpec(name="auc", tolerance=auc + 0.01)]
    assert compare_metrics("binary_classification", y, candidate, champion,
                           loose)[0].status == "pass"
    relative = [MetricSpec(name="auc", tolerance=0.5, relative=True)]
    found = compare_metrics("binary_classification", y, candidate, champion, relative)[0]
    assert found.allowed_shortfall == pytest.approx(0.5 * found.champion)
    assert found.status == "pass"


def test_without_a_champion_the_gate_is_skipped_but_the_numbers_are_there():
    y, candidate, _ = two_models(1000, 0.1, 0.1)
    found = compare_metrics("binary_classification", y, candidate, None, SPECS)
    assert all(c.champion is None and 0 <= c.candidate for c in found)
    assert all(c.candidate_interval.lower <= c.candidate <= c.candidate_interval.upper
               for c in found)
    assert comparison_gate(found, True).status == "skipped"


def test_metric_key_names_non_default_thresholds():
    assert metric_key(MetricSpec(name="precision", threshold=0.8)) == "precision@0.8"
    assert metric_key(MetricSpec(name="auc", threshold=0.8)) == "auc"
