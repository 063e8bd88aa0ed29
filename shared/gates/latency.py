"""Inference latency: single-row requests against a loaded model, after a warm-up.

Percentiles are numpy's linear-interpolation quantiles of the per-request wall-clock times
(time.perf_counter). The gate judges p99: against an absolute limit, and against the champion's
p99 measured in the same run on the same machine. Below `ratio_floor_ms` the ratio is not judged:
at sub-millisecond times the timer and scheduler noise decide it, not the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.gates.results import FAIL, PASS, GateResult, skipped


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    requests: int

    def to_dict(self) -> dict[str, float]:
        return {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms,
                "requests": self.requests}


def measure_latency(predict: Callable[[object], object], rows: Sequence[object],
                    warmup: int = 20, requests: int = 200) -> LatencyStats:
    """Call `predict` once per request with one prepared single-row input, cycling `rows`."""
    if not rows:
        raise ValueError("no rows to send")
    for index in range(warmup):
        predict(rows[index % len(rows)])
    timings = np.empty(requests)
    for index in range(requests):
        row = rows[index % len(rows)]
        started = time.perf_counter()
        predict(row)
        timings[index] = (time.perf_counter() - started) * 1000
    p50, p95, p99 = np.quantile(timings, [0.5, 0.95, 0.99])
    return LatencyStats(float(p50), float(p95), float(p99), requests)


def latency_gate(candidate: LatencyStats | None, champion: LatencyStats | None,
                 max_p99_ms: float, max_p99_ratio: float, ratio_floor_ms: float,
                 blocking: bool, why_missing: str = "latency was not measured") -> GateResult:
    if candidate is None:
        return skipped("latency", blocking, why_missing)
    problems = []
    if candidate.p99_ms > max_p99_ms:
        problems.append(f"p99 {candidate.p99_ms:.2f} ms > {max_p99_ms} ms")
    ratio = None
    if champion is not None and champion.p99_ms > 0:
        ratio = candidate.p99_ms / champion.p99_ms
        if ratio > max_p99_ratio and candidate.p99_ms >= ratio_floor_ms:
            problems.append(f"p99 {candidate.p99_ms:.2f} ms is {ratio:.2f}x the champion's "
                            f"{champion.p99_ms:.2f} ms (> {max_p99_ratio}x)")
    detail = "; ".join(problems) or (
        f"p50 {candidate.p50_ms:.2f} / p95 {candidate.p95_ms:.2f} / p99 {candidate.p99_ms:.2f} ms"
        + (f", {ratio:.2f}x the champion" if ratio is not None else ""))
    return GateResult("latency", FAIL if problems else PASS, blocking,
                      observed=candidate.p99_ms, threshold=max_p99_ms, detail=detail,
                      evidence={"candidate": candidate.to_dict(),
                                "champion": champion.to_dict() if champion else None,
                                "p99_ratio": ratio, "max_p99_ratio": max_p99_ratio,
                                "ratio_floor_ms": ratio_floor_ms})
