"""The monitor's math on generated traffic with known drift (pure: no servers)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.alerts import parse_alerts
from shared.events import AlertKind
from shared.gates.drift import categorical_drift, numeric_drift
from shared.monitoring.monitor import (
    Change,
    MetricState,
    alert_for,
    evaluate_window,
    judge,
    to_wire,
)
from shared.monitoring.payloads import read_records
from shared.monitoring.policy import MonitoringPolicy, Threshold
from shared.monitoring.reference import (
    ReferenceDistribution,
    categorical_reference,
    numeric_reference,
)
from shared.serving.payload_log import PayloadRecord
from tests.monitoring.traffic import START, window_traffic

POLICY = MonitoringPolicy(n_bootstrap=100)
ROWS = 400


def run_windows(fitted, plan: list[dict], policy: MonitoringPolicy = POLICY):
    """Judge one window per plan entry; returns (results, changes per window)."""
    states: dict[str, MetricState] = {}
    results, changes = [], []
    for offset, spec in enumerate(plan):
        window = START + offset
        records, truth = window_traffic(fitted, window, spec.get("rows", ROWS),
                                        seed=1000 + offset, shift=spec.get("shift", 0.0),
                                        flip_labels=spec.get("flip", 0.0),
                                        error_rate=spec.get("errors", 0.0))
        labels = truth if spec.get("labelled", True) else {}
        result = evaluate_window(read_records(records), "1", window, fitted.reference, labels,
                                 policy)
        states, window_changes = judge(states, result.judged, policy, window)
        results.append(result)
        changes.append(window_changes)
    return results, changes


def first_alert(changes, metric: str) -> int | None:
    for offset, window_changes in enumerate(changes):
        if any(c.metric == metric and c.status == "firing" and c.new for c in window_changes):
            return offset
    return None


def test_no_drift_raises_no_alert_over_many_windows(fitted):
    results, changes = run_windows(fitted, [{}] * 30)
    assert [c for window in changes for c in window] == []
    # Every judged figure was computed, so "no alert" is not "no data".
    for result in results:
        assert {"feature_psi", "prediction_psi", "ece", "performance_drop",
                "estimated_performance_drop", "latency_p99_ms", "error_rate"} <= set(result.judged)
        assert result.figures["feature_psi"] < 0.1
        assert result.judged["ece"] < POLICY.ece.enter


def test_injected_covariate_shift_alerts_in_its_first_window(fitted):
    plan = [{}] * 8 + [{"shift": 0.6}] * 4
    results, changes = run_windows(fitted, plan)
    assert first_alert(changes, "feature_psi") == 8
    assert first_alert(changes, "prediction_psi") == 8
    # The shifted inputs stay inside what the model learnt: calibration and accuracy hold, and
    # confidence-based estimation agrees (no performance alert from either).
    assert first_alert(changes, "ece") is None
    assert first_alert(changes, "performance_drop") is None
    assert first_alert(changes, "estimated_performance_drop") is None
    worst = results[8].detail["feature_psi"]
    assert all(name in worst for name in ("amount", "age", "tenure", "velocity"))
    # While it lasts, every window re-fires under the same episode (since = the first window).
    for window_changes in changes[9:]:
        psi = [c for c in window_changes if c.metric == "feature_psi"]
        assert psi and psi[0].status == "firing" and not psi[0].new and psi[0].since == START + 8


def test_concept_drift_shows_in_labels_not_in_inputs(fitted):
    plan = [{}] * 4 + [{"flip": 0.3}] * 3
    results, changes = run_windows(fitted, plan)
    assert first_alert(changes, "performance_drop") == 4
    assert first_alert(changes, "ece") == 4
    # The inputs did not move, so neither PSI nor the label-free estimate can see it.
    assert first_alert(changes, "feature_psi") is None
    assert first_alert(changes, "estimated_performance_drop") is None
    assert results[4].figures["accuracy"] < results[0].figures["accuracy"] - 0.1


def test_cbpe_interval_covers_the_realised_accuracy(fitted):
    plan = [{}] * 12 + [{"shift": 0.8}] * 8
    results, _ = run_windows(fitted, plan)
    covered = [r.figures["cbpe_accuracy_lower"] <= r.figures["accuracy"]
               <= r.figures["cbpe_accuracy_upper"] for r in results]
    assert sum(covered) >= len(covered) - 1
    assert all(0 < r.figures["cbpe_accuracy_se"] < 0.05 for r in results)
    # Under covariate shift the estimate follows the realised accuracy.
    shifted = results[12:]
    estimate = np.mean([r.figures["cbpe_accuracy"] for r in shifted])
    realised = np.mean([r.figures["accuracy"] for r in shifted])
    assert abs(estimate - realised) < 0.02


def test_without_labels_only_label_free_figures_are_judged(fitted):
    results, changes = run_windows(fitted, [{"labelled": False}] * 2)
    assert "ece" not in results[0].judged and "performance_drop" not in results[0].judged
    assert "estimated_performance_drop" in results[0].judged
    assert results[0].figures["labelled_rows"] == 0


def test_too_few_rows_are_reported_but_not_judged(fitted):
    results, _ = run_windows(fitted, [{"rows": 50}])
    assert results[0].figures["rows"] == 50
    assert "feature_psi" not in results[0].judged and "latency_p99_ms" in results[0].judged


def test_error_rate_alerts(fitted):
    _, changes = run_windows(fitted, [{}, {"errors": 0.2}])
    assert first_alert(changes, "error_rate") == 1


# ---- hysteresis ------------------------------------------------------------------------------

HOVERING = [0.19, 0.21, 0.19, 0.22, 0.18, 0.21, 0.15, 0.09, 0.12, 0.21, 0.2, 0.11]


def transitions(values, threshold: Threshold) -> list[tuple[int, str]]:
    policy = MonitoringPolicy(feature_psi=threshold)
    states: dict[str, MetricState] = {}
    seen = []
    for window, value in enumerate(values):
        states, changes = judge(states, {"feature_psi": value}, policy, window)
        seen.extend((window, c.status) for c in changes if c.new)
    return seen


def test_hysteresis_keeps_a_hovering_value_from_flapping():
    assert transitions(HOVERING, Threshold(enter=0.2, exit=0.1)) == [
        (1, "firing"), (7, "resolved"), (9, "firing")]
    # The same values against a single line flap on nearly every window.
    assert len(transitions(HOVERING, Threshold(enter=0.2, exit=0.2))) == 8


def test_no_data_keeps_the_state():
    policy = MonitoringPolicy()
    states, _ = judge({}, {"feature_psi": 0.5}, policy, 1)
    after, changes = judge(states, {"feature_psi": None}, policy, 2)
    assert after["feature_psi"].alerting and changes == []


def test_threshold_exit_above_enter_is_refused():
    with pytest.raises(ValueError, match="exit"):
        Threshold(enter=0.1, exit=0.2)


# ---- the alerts it emits -----------------------------------------------------------------------

def test_alerts_keep_one_fingerprint_per_episode_and_round_trip_the_wire_format(fitted):
    results, changes = run_windows(fitted, [{"shift": 0.7}] * 2)
    alerts = [alert_for(c, r, endpoint="fraud-prod", model_name="fraud", policy=POLICY)
              for r, window_changes in zip(results, changes, strict=True) for c in window_changes
              if c.metric == "feature_psi"]
    assert len(alerts) == 2 and alerts[0].fingerprint == alerts[1].fingerprint
    first = alerts[0]
    assert first.alert_kind is AlertKind.FEATURE_DRIFT and first.status == "firing"
    assert (first.model_name, first.version, first.endpoint) == ("fraud", "1", "fraud-prod")
    assert first.figures["feature_psi"] >= 0.2 and first.figures["threshold"] == 0.2
    assert first.labels["window"] == str(START) and alerts[1].labels["windows_in_alert"] == "2"
    body = json.dumps(to_wire(alerts, POLICY.window_seconds)).encode()
    parsed = parse_alerts("gatehouse", body).alerts
    assert [p.alert for p in parsed] == alerts
    assert parsed[0].dedupe_key == parsed[1].dedupe_key  # same episode, same start


def test_resolved_alert_is_informational():
    result = evaluate_window(read_records([]), "1", 7, None, {}, POLICY)
    alert = alert_for(Change("latency_p99_ms", "resolved", 10.0, 5, True), result,
                      endpoint="e", model_name=None, policy=POLICY)
    assert alert.status == "resolved" and alert.severity == "info"
    assert alert.alert_kind is AlertKind.LATENCY and alert.model_name is None


# ---- payloads ------------------------------------------------------------------------------------

def record(inputs: dict, outputs: dict | None, request_id: str = "r", status: int = 200,
           latency: float = 10.0) -> PayloadRecord:
    return PayloadRecord(ts=1.0, endpoint="e", request_id=request_id, model_name="m",
                         version="1", inputs=json.dumps(inputs),
                         outputs=json.dumps(outputs) if outputs is not None else None,
                         latency_ms=latency, status=status)


@pytest.mark.parametrize("inputs", [
    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}},
    {"dataframe_records": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
    {"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]},
    {"inputs": {"a": [1, 3], "b": [2, 4]}},
])
def test_every_scoring_protocol_format_is_read(inputs):
    data = read_records([record(inputs, {"predictions": [0.2, 0.9]}, "req")])
    assert [row.features for row in data.rows] == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert [row.key for row in data.rows] == ["req/0", "req/1"]
    assert [row.score for row in data.rows] == [0.2, 0.9]


@pytest.mark.parametrize("prediction,score,predicted", [
    ([0.3, 0.7], 0.7, None), (0.25, 0.25, None), (1, None, 1), (True, None, 1),
    ({"probability": 0.6}, 0.6, None), ({"prediction": "fraud"}, None, "fraud"),
    (12.5, None, 12.5), ([0.1, 0.2, 0.7], None, 2),
])
def test_prediction_shapes(prediction, score, predicted):
    data = read_records([record({"dataframe_records": [{"a": 1}]}, {"predictions": [prediction]})])
    assert (data.rows[0].score, data.rows[0].predicted) == (score, predicted)
    assert data.rows[0].key == "r"


def test_failed_and_unreadable_requests_count_for_service_figures_only():
    data = read_records([
        record({"dataframe_records": [{"a": 1}]}, None, status=503, latency=900.0),
        record({"nonsense": 1}, {"predictions": [0.5]}),
        record({"messages": []}, {"choices": [], "usage": {"completion_tokens": 40}},
               latency=400.0)])
    assert len(data.requests) == 3 and data.rows == [] and data.unreadable == 1
    result = evaluate_window(data, "1", 1, None, {}, MonitoringPolicy(min_requests=1))
    assert result.figures["error_rate"] == pytest.approx(1 / 3)
    assert result.figures["token_latency_p50_ms"] == pytest.approx(10.0)
    assert result.judged["token_latency_p99_ms"] == pytest.approx(10.0)


# ---- the reference -------------------------------------------------------------------------------

def test_reference_psi_is_the_gate_librarys_psi():
    rng = np.random.default_rng(3)
    reference, current = rng.normal(0, 1, 3000), rng.normal(0.4, 1.2, 800)
    current[:20] = np.nan
    assert numeric_reference(reference).psi(current) == pytest.approx(
        numeric_drift("x", reference, current).psi)
    colours = rng.choice(["red", "green", "blue"], 2000, p=[0.5, 0.3, 0.2])
    drifted = rng.choice(["red", "green", "blue"], 500, p=[0.2, 0.3, 0.5])
    assert categorical_reference(list(colours)).psi(list(drifted)) == pytest.approx(
        categorical_drift("c", colours, drifted).psi)


def test_reference_round_trips_as_json(fitted):
    text = fitted.reference.to_json()
    assert ReferenceDistribution.from_json(text) == fitted.reference
    assert set(fitted.reference.features) == {"amount", "age", "tenure", "velocity"}
    assert 0.7 < fitted.reference.accuracy < 0.9 and fitted.reference.labelled_rows == 3000


def test_categorical_reference_puts_unseen_values_in_other():
    reference = categorical_reference(["a", "a", "b", None])
    assert reference.bin_counts(["a", "z", None, "b"]).tolist() == [1, 1, 1, 1]
    frame_reference = pd.DataFrame({"colour": ["a", "b"] * 50})
    from shared.monitoring.reference import reference_from_frame

    built = reference_from_frame("m", "1", frame_reference)
    assert built.features["colour"].kind == "categorical" and built.prediction is None


def test_summaries_of_two_sources_add_up(fitted):
    """An endpoint read from two sources: counts and bins add up; quantiles are the larger's."""
    from shared.monitoring.summary import merge, summarise

    records, truth = window_traffic(fitted, START, 300, seed=5, error_rate=0.1)
    halves = [read_records(records[:100]), read_records(records[100:])]
    first, second = (summarise(data, "1", fitted.reference, 0.5, truth) for data in halves)
    whole = summarise(read_records(records), "1", fitted.reference, 0.5, truth)
    merged = merge(first, second)
    assert (merged.requests, merged.errors, merged.rows, merged.scored) == (
        whole.requests, whole.errors, whole.rows, whole.scored)
    assert merged.feature_counts == whole.feature_counts
    assert merged.prediction_counts == whole.prediction_counts
    assert merged.labelled == whole.labelled
    assert merged.confidence_sum == pytest.approx(whole.confidence_sum, rel=1e-12)
    assert merged.latency == second.latency  # 200 requests against 100
