"""The monitor's math (pure): one window of served traffic against the version's reference,
computed from the window's summary (summary.py: counts, quantiles, bin counts, sums), so
traffic summarised in Python (the payload log) or in a SQL warehouse (an inference table) is
judged alike.

Figures per window and served version (all logged; `judged` are compared with the policy):
- `psi.<feature>` per input feature and `feature_psi` = their maximum (judged);
- `prediction_psi`: PSI of the model's scores against the reference scores (judged), a leading
  indicator that needs no labels;
- calibration on labelled rows: `ece` with its interval (shared.gates.calibration); judged on the
  interval's lower bound, so a small window's noise (a perfectly calibrated model shows an ECE
  of a few points on a few hundred rows) does not raise an alert;
- performance on labelled rows: `accuracy` with its Wilson interval, `auc`;
  `performance_drop` = reference accuracy - accuracy, judged on the lower bound of that
  difference (both accuracies are estimates: the reference's from its holdout size);
- confidence-based performance estimation (CBPE) on every scored row, labelled or not: with a
  calibrated model, row i is classified correctly with probability c_i = p_i if p_i >= t else
  1 - p_i, so expected accuracy = mean(c_i), with standard error sqrt(sum c_i (1 - c_i)) / n (the
  Poisson-binomial spread of the count of correct rows). `estimated_performance_drop` =
  reference accuracy - the estimate, judged on the lower bound of that difference. Valid under
  covariate shift while calibration holds, which the ECE figures check once labels arrive;
- latency p50/p95/p99 over all requests (`latency_p99_ms` judged), token latency (ms per output
  token) when responses report `usage.completion_tokens`, and `error_rate` (judged).

Hysteresis (`judge`): a metric enters the alert state when its judged value reaches the
threshold's `enter`, and leaves it only when the value falls below `exit` (< enter). While in
the alert state every window with data re-fires (same fingerprint), so consumers can count
violating windows; leaving it resolves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from shared.alerts.gatehouse import SCHEMA, wire_fingerprint
from shared.events import MonitoringAlert, Severity
from shared.gates.calibration import assess_calibration, wilson_interval
from shared.gates.drift import population_stability_index
from shared.monitoring.payloads import WindowData
from shared.monitoring.policy import METRICS, MonitoringPolicy
from shared.monitoring.reference import FeatureReference, ReferenceDistribution
from shared.monitoring.summary import (
    Quantiles,
    WindowSummary,
    labelled_pairs,
    summarise,
    window_bounds,
)

SOURCE = "gatehouse"
Figures = dict[str, float]
Judged = dict[str, float | None]  # the figures the thresholds judge (None: not enough data)


@dataclass(frozen=True)
class WindowResult:
    version: str | None
    window: int
    figures: dict[str, float]
    judged: dict[str, float | None]
    detail: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricState:
    alerting: bool = False
    since: int | None = None


@dataclass(frozen=True)
class Change:
    metric: str
    status: Literal["firing", "resolved"]
    value: float
    since: int
    new: bool            # the window that entered (or left) the alert state


def _quantile_figures(values: Quantiles | None, prefix: str, figures: Figures) -> None:
    if values is not None:
        p50, p95, p99 = values
        figures.update({f"{prefix}_p50_ms": p50, f"{prefix}_p95_ms": p95,
                        f"{prefix}_p99_ms": p99})


def _service_figures(summary: WindowSummary, policy: MonitoringPolicy, figures: Figures,
                     judged: Judged) -> None:
    figures["requests"] = float(summary.requests)
    if not summary.requests:
        return
    figures["error_rate"] = summary.errors / summary.requests
    _quantile_figures(summary.latency, "latency", figures)
    _quantile_figures(summary.token_latency, "token_latency", figures)
    if summary.requests >= policy.min_requests:
        judged["error_rate"] = figures["error_rate"]
        judged["latency_p99_ms"] = figures["latency_p99_ms"]
    if summary.token_requests >= policy.min_requests:
        judged["token_latency_p99_ms"] = figures["token_latency_p99_ms"]


def _psi(feature: FeatureReference, counts: list[float] | None, epsilon: float) -> float:
    current = np.asarray(counts if counts is not None else [], float)
    if counts is None or current.sum() == 0:
        return float("inf")  # a value it could not bin, or none at all
    return population_stability_index(np.asarray(feature.counts, float), current, epsilon)


def _drift_figures(summary: WindowSummary, reference: ReferenceDistribution,
                   policy: MonitoringPolicy, figures: Figures, judged: Judged,
                   detail: dict[str, str]) -> None:
    psis = {name: _psi(feature, summary.feature_counts.get(name), policy.epsilon)
            for name, feature in reference.features.items()}
    finite = {name: (value if np.isfinite(value) else 1e6) for name, value in psis.items()}
    figures.update({f"psi.{name}": value for name, value in finite.items()})
    if finite:
        judged["feature_psi"] = figures["feature_psi"] = max(finite.values())
        worst = sorted(finite.items(), key=lambda item: -item[1])[:5]
        detail["feature_psi"] = ", ".join(f"{name} {value:.3f}" for name, value in worst)
    if reference.prediction is not None and summary.scored >= policy.min_rows:
        judged["prediction_psi"] = figures["prediction_psi"] = _psi(
            reference.prediction, summary.prediction_counts, policy.epsilon)


def _reference_accuracy(reference: ReferenceDistribution | None) -> tuple[float, float] | None:
    """The reference accuracy and its sampling variance (None: no reference accuracy)."""
    if reference is None or reference.accuracy is None:
        return None
    accuracy = reference.accuracy
    n = reference.labelled_rows or 0
    return accuracy, accuracy * (1 - accuracy) / n if n else 0.0


def _labelled_figures(summary: WindowSummary, labels: Mapping[str, float],
                      reference: ReferenceDistribution | None, policy: MonitoringPolicy,
                      window: int, figures: Figures, judged: Judged) -> None:
    from scipy.stats import norm

    scored = labelled_pairs(summary, labels)
    figures["labelled_rows"] = float(len(scored))
    if len(scored) < policy.min_labelled_rows:
        return
    y = np.array([label for label, _ in scored]).astype(int)
    p = np.array([score for _, score in scored], dtype=float)
    assessment = assess_calibration(y, p, kind="binary", n_bins=policy.ece_bins,
                                    level=policy.confidence_level, n_boot=policy.n_bootstrap,
                                    seed=window % (2 ** 32))
    figures.update({"ece": assessment.ece, "ece_lower": assessment.lower,
                    "ece_upper": assessment.upper})
    judged["ece"] = assessment.lower
    correct = ((p >= policy.decision_threshold) == (y == 1)).astype(int)
    low, high = wilson_interval(np.array([correct.sum()]), np.array([len(correct)]),
                                policy.confidence_level)
    accuracy = float(correct.mean())
    figures.update({"accuracy": accuracy, "accuracy_lower": float(low[0]),
                    "accuracy_upper": float(high[0])})
    if 0 < y.sum() < len(y):
        from sklearn.metrics import roc_auc_score

        figures["auc"] = float(roc_auc_score(y, p))
    known = _reference_accuracy(reference)
    if known is not None:
        reference_accuracy, reference_variance = known
        # Both accuracies are estimates: judge the drop on the lower bound of their difference.
        z = float(norm.ppf((1 + policy.confidence_level) / 2))
        drop = reference_accuracy - accuracy
        spread = np.sqrt(reference_variance + accuracy * (1 - accuracy) / len(correct))
        figures["performance_drop"] = drop
        judged["performance_drop"] = drop - z * float(spread)


def _cbpe_figures(summary: WindowSummary, reference: ReferenceDistribution | None,
                  policy: MonitoringPolicy, figures: Figures, judged: Judged) -> None:
    from scipy.stats import norm

    n = summary.scored
    if n < policy.min_rows:
        return
    estimate = summary.confidence_sum / n
    se = float(np.sqrt(summary.confidence_spread) / n)
    z = float(norm.ppf((1 + policy.confidence_level) / 2))
    figures.update({"cbpe_accuracy": estimate, "cbpe_accuracy_se": se,
                    "cbpe_accuracy_lower": max(0.0, estimate - z * se),
                    "cbpe_accuracy_upper": min(1.0, estimate + z * se)})
    known = _reference_accuracy(reference)
    if known is not None:
        reference_accuracy, reference_variance = known
        drop = reference_accuracy - estimate
        figures["estimated_performance_drop"] = drop
        judged["estimated_performance_drop"] = drop - z * float(np.sqrt(reference_variance
                                                                         + se * se))


def evaluate_summary(summary: WindowSummary, version: str | None, window: int,
                     reference: ReferenceDistribution | None, labels: Mapping[str, float],
                     policy: MonitoringPolicy) -> WindowResult:
    """The figures and judged values of one window and served version, from its summary
    (built with this `reference` and `policy.decision_threshold`)."""
    figures: Figures = {}
    judged: Judged = {}
    detail: dict[str, str] = {}
    _service_figures(summary, policy, figures, judged)
    figures["rows"] = float(summary.rows)
    if reference is not None and summary.rows >= policy.min_rows:
        _drift_figures(summary, reference, policy, figures, judged, detail)
    _labelled_figures(summary, labels, reference, policy, window, figures, judged)
    _cbpe_figures(summary, reference, policy, figures, judged)
    return WindowResult(version, window, figures, judged, detail)


def evaluate_window(data: WindowData, version: str | None, window: int,
                    reference: ReferenceDistribution | None, labels: Mapping[str, float],
                    policy: MonitoringPolicy) -> WindowResult:
    """evaluate_summary on the summary of one window's records."""
    summary = summarise(data, version, reference, policy.decision_threshold, labels.keys())
    return evaluate_summary(summary, version, window, reference, labels, policy)


def judge(states: Mapping[str, MetricState], judged: Mapping[str, float | None],
          policy: MonitoringPolicy, window: int) -> tuple[dict[str, MetricState], list[Change]]:
    """New states and the changes to announce, with hysteresis (see the module docstring)."""
    thresholds = policy.thresholds()
    new_states = dict(states)
    changes = []
    for metric, threshold in thresholds.items():
        state = states.get(metric, MetricState())
        value = judged.get(metric)
        if value is None or not threshold.enabled:
            continue
        if not state.alerting and value >= threshold.enter:
            new_states[metric] = MetricState(True, window)
            changes.append(Change(metric, "firing", value, window, True))
        elif state.alerting and value < threshold.exit:
            new_states[metric] = MetricState(False, None)
            changes.append(Change(metric, "resolved", value, state.since or window, True))
        elif state.alerting:
            changes.append(Change(metric, "firing", value, state.since or window, False))
    return new_states, changes


def _title(change: Change, result: WindowResult, where: str, policy: MonitoringPolicy) -> str:
    threshold = getattr(policy, change.metric)
    name = change.metric.replace("_", " ")
    if change.status == "resolved":
        return f"{name} back below {threshold.exit:g} on {where}: {change.value:.4g}"
    detail = result.detail.get(change.metric)
    return (f"{name} {change.value:.4g} >= {threshold.enter:g} on {where}"
            + (f" ({detail})" if detail else ""))


def alert_for(change: Change, result: WindowResult, *, endpoint: str, model_name: str | None,
              policy: MonitoringPolicy) -> MonitoringAlert:
    kind = METRICS[change.metric]
    threshold = getattr(policy, change.metric)
    where = f"{model_name or endpoint} v{result.version} @ {endpoint}"
    start, _ = window_bounds(change.since, policy.window_seconds)
    severity: Severity = ("info" if change.status == "resolved"
                else "error" if change.value >= 2 * threshold.enter else "warning")
    figures = {change.metric: change.value, "threshold": threshold.enter,
               "exit_threshold": threshold.exit,
               **{k: v for k, v in result.figures.items() if np.isfinite(v)}}
    labels = {"metric": change.metric, "window": str(result.window),
              "since_window": str(change.since),
              "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
              "windows_in_alert": str(result.window - change.since + 1)}
    return MonitoringAlert(
        alert_kind=kind, source=SOURCE, model_name=model_name, version=result.version,
        endpoint=endpoint, severity=severity, status=change.status,
        title=_title(change, result, where, policy)[:500], figures=figures, labels=labels,
        fingerprint=wire_fingerprint(model_name, result.version, endpoint, kind, change.metric))


def to_wire(alerts: list[MonitoringAlert], window_seconds: float) -> dict[str, Any]:
    """Alerts in Gatehouse's monitor format (POST /api/alerts/gatehouse)."""
    items = []
    for alert in alerts:
        since = int(alert.labels.get("since_window", alert.labels.get("window", "0")))
        _, end = window_bounds(int(alert.labels.get("window", since)), window_seconds)
        items.append({
            **alert.model_dump(mode="json", exclude={"kind", "source"}, exclude_none=True),
            "starts_at": datetime.fromtimestamp(since * window_seconds, UTC).isoformat(),
            "at": datetime.fromtimestamp(end, UTC).isoformat()})
    return {"schema": SCHEMA, "alerts": items}
