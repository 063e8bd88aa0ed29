"""What the monitor's math needs of one window and served version, as a small summary: request,
error and row counts, latency quantiles, bin counts on the reference's bins, the sums of the
confidence-based performance estimate, and the scores of the rows that have labels.

The payload-log path builds it from records (`summarise`); the Databricks path has the SQL
warehouse build the same figures (shared/monitoring/warehouse.py) and fetches only them. Both
feed `evaluate_summary` (monitor.py), so their verdicts agree: PSI comes from the same counts,
quantiles are exact (linear interpolation, as numpy's), only the CBPE sums may differ in the
last bits (summation order).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from shared.monitoring.payloads import WindowData, read_records
from shared.monitoring.reference import ReferenceDistribution

QUANTILES = (0.5, 0.95, 0.99)
Quantiles = tuple[float, float, float]


@dataclass(frozen=True)
class WindowSummary:
    """One window and served version. `feature_counts[name]` is None when a value could not be
    binned (text where the reference had numbers): that feature's PSI is infinite."""

    requests: int = 0
    errors: int = 0
    latency: Quantiles | None = None             # p50, p95, p99 over every request (ms)
    token_requests: int = 0                      # successful requests that reported tokens
    token_latency: Quantiles | None = None       # ms per output token
    rows: int = 0                                # scored rows read
    scored: int = 0                              # of them with a score (P(positive class))
    confidence_sum: float = 0.0                  # sum of c_i (CBPE, see monitor.py)
    confidence_spread: float = 0.0               # sum of c_i (1 - c_i)
    feature_counts: dict[str, list[float] | None] = field(default_factory=dict)
    prediction_counts: list[float] | None = None
    labelled: list[tuple[str, float]] = field(default_factory=list)  # (row key, score), by key
    model_name: str | None = None


def window_index(ts: float, window_seconds: float) -> int:
    return int(ts // window_seconds)


def window_bounds(window: int, window_seconds: float) -> tuple[float, float]:
    return window * window_seconds, (window + 1) * window_seconds


def quantiles(values: Iterable[float]) -> Quantiles | None:
    array = np.asarray(list(values), float)
    if not len(array):
        return None
    p50, p95, p99 = np.percentile(array, [100 * q for q in QUANTILES])
    return float(p50), float(p95), float(p99)


def confidence(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.where(scores >= threshold, scores, 1.0 - scores)


def _feature_counts(values: list, feature) -> list[float] | None:
    try:
        return feature.bin_counts(values).tolist()
    except (ValueError, TypeError):  # e.g. text where the reference had numbers
        return None


def summarise(data: WindowData, version: str | None, reference: ReferenceDistribution | None,
              threshold: float, label_keys: Collection[str] = (),
              model_name: str | None = None) -> WindowSummary:
    """The summary of `version`'s requests and rows in `data` (one window's records)."""
    requests = [r for r in data.requests if r.version == version]
    per_token = [r.latency_ms / r.output_tokens for r in requests if r.ok and r.output_tokens]
    rows = [row for row in data.rows if row.version == version]
    scores = np.array([row.score for row in rows if row.score is not None], dtype=float)
    confident = confidence(scores, threshold)
    features: dict[str, list[float] | None] = {}
    prediction = None
    if reference is not None:
        features = {name: _feature_counts([row.features.get(name) for row in rows], feature)
                    for name, feature in reference.features.items()}
        if reference.prediction is not None:
            prediction = reference.prediction.bin_counts(scores).tolist()
    labelled = sorted((row.key, float(row.score)) for row in rows
                      if row.score is not None and row.key in label_keys)
    return WindowSummary(
        requests=len(requests), errors=sum(1 for r in requests if not r.ok),
        latency=quantiles(r.latency_ms for r in requests), token_requests=len(per_token),
        token_latency=quantiles(per_token), rows=len(rows), scored=len(scores),
        confidence_sum=float(np.sum(confident)),
        confidence_spread=float(np.sum(confident * (1.0 - confident))),
        feature_counts=features, prediction_counts=prediction, labelled=labelled,
        model_name=model_name)


def merge(first: WindowSummary, second: WindowSummary) -> WindowSummary:
    """Two sources' summaries of the same window and version (an endpoint read from both the
    payload log and an inference table). Counts add up; quantiles cannot be merged from
    quantiles, so those of the source with more requests stand."""
    if not second.requests:
        return first
    if not first.requests:
        return second
    larger = first if first.requests >= second.requests else second
    tokens = first if first.token_requests >= second.token_requests else second

    def added(a: list[float] | None, b: list[float] | None) -> list[float] | None:
        return None if a is None or b is None else [x + y for x, y in zip(a, b, strict=True)]

    features = {name: added(first.feature_counts[name], counts)
                if name in first.feature_counts else counts
                for name, counts in second.feature_counts.items()}
    return replace(
        first, requests=first.requests + second.requests, errors=first.errors + second.errors,
        latency=larger.latency, token_requests=first.token_requests + second.token_requests,
        token_latency=tokens.token_latency, rows=first.rows + second.rows,
        scored=first.scored + second.scored,
        confidence_sum=first.confidence_sum + second.confidence_sum,
        confidence_spread=first.confidence_spread + second.confidence_spread,
        feature_counts={**first.feature_counts, **features},
        prediction_counts=added(first.prediction_counts, second.prediction_counts)
        if first.prediction_counts is not None else second.prediction_counts,
        labelled=sorted(first.labelled + second.labelled),
        model_name=second.model_name or first.model_name)


def labelled_pairs(summary: WindowSummary, labels: Mapping[str, float]) -> list[tuple[float,
                                                                                  float]]:
    """(label, score) of the summary's labelled rows."""
    return [(labels[key], score) for key, score in summary.labelled if key in labels]


@dataclass(frozen=True)
class Lens:
    """How a served version's windows are summarised: on its reference's bins (None: no drift
    figures) and with its policy's decision threshold (CBPE)."""

    reference: ReferenceDistribution | None
    threshold: float


Plan = Callable[[str | None, str], "Lens | None"]  # (model, version) -> Lens; None: not monitored
Summaries = dict[tuple[int, str], WindowSummary]   # by (window, version)


def summarise_records(records: list, width: float, plan: Plan,
                      label_keys: Collection[str] = ()) -> Summaries:
    """Payload-log records (or rows shaped like them) summarised per window and version."""
    per_window: dict[int, list] = {}
    for record in records:
        per_window.setdefault(window_index(record.ts, width), []).append(record)
    models = {r.version: r.model_name for r in records if r.model_name}
    summaries: Summaries = {}
    for window, window_records in sorted(per_window.items()):
        data = read_records(window_records)
        for version in sorted({r.version for r in data.requests if r.version is not None}):
            lens = plan(models.get(version), version)
            if lens is not None:
                summaries[(window, version)] = summarise(
                    data, version, lens.reference, lens.threshold, label_keys,
                    models.get(version))
    return summaries
