"""Performance against the champion: every configured metric for both models on the same rows.

For each metric the *improvement* is candidate - champion when higher is better and champion -
candidate when lower is better, so a negative improvement is a regression whatever the metric.
The allowed shortfall is the tolerance (absolute) or tolerance * |champion| (relative). With a
paired bootstrap interval [lo, hi] of the improvement:

- pass: the improvement is at least -allowed (the candidate is not worse beyond the tolerance);
- fail: hi < -allowed (worse beyond the tolerance, and the holdout says so with confidence);
- inconclusive: worse on the point estimate, but the interval reaches back over the tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from shared.gates.bootstrap import Interval, bootstrap_intervals
from shared.gates.metrics import HIGHER_IS_BETTER, metric_replicates, metric_value
from shared.gates.results import FAIL, INCONCLUSIVE, PASS, GateResult, skipped

if TYPE_CHECKING:
    from shared.gates.policy import MetricSpec


@dataclass(frozen=True)
class MetricComparison:
    key: str
    name: str
    higher_is_better: bool
    candidate: float
    candidate_interval: Interval
    champion: float | None = None
    champion_interval: Interval | None = None
    improvement: float | None = None
    improvement_interval: Interval | None = None
    allowed_shortfall: float = 0.0
    status: str = PASS

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.key, "higher_is_better": self.higher_is_better,
                "candidate": self.candidate,
                "candidate_interval": self.candidate_interval.to_dict(),
                "champion": self.champion,
                "champion_interval": self.champion_interval.to_dict()
                if self.champion_interval else None,
                "improvement": self.improvement,
                "improvement_interval": self.improvement_interval.to_dict()
                if self.improvement_interval else None,
                "allowed_shortfall": self.allowed_shortfall, "status": self.status}


def metric_key(spec: MetricSpec) -> str:
    if spec.name in ("accuracy", "f1", "precision", "recall") and spec.threshold != 0.5:
        return f"{spec.name}@{spec.threshold:g}"
    return spec.name


def compare_metrics(task: str, labels: ArrayLike, candidate: ArrayLike,
                    champion: ArrayLike | None, specs: Sequence[MetricSpec], level: float = 0.95,
                    n_boot: int = 200, seed: int = 0) -> list[MetricComparison]:
    """`specs` are policy MetricSpecs (name, tolerance, relative, threshold)."""
    labels = np.asarray(labels)
    candidate = np.asarray(candidate, dtype=float)
    champion = None if champion is None else np.asarray(champion, dtype=float)

    def statistics(rows: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        y = labels[rows]
        for spec in specs:
            key = metric_key(spec)
            mine = metric_replicates(spec.name, task, y, candidate[rows], weights, spec.threshold)
            out[f"{key}.candidate"] = mine
            if champion is not None:
                theirs = metric_replicates(spec.name, task, y, champion[rows], weights,
                                           spec.threshold)
                out[f"{key}.champion"] = theirs
                better = HIGHER_IS_BETTER[spec.name]
                out[f"{key}.improvement"] = mine - theirs if better else theirs - mine
        return out

    estimates = {}
    for spec in specs:
        key, better = metric_key(spec), HIGHER_IS_BETTER[spec.name]
        mine = estimates[f"{key}.candidate"] = metric_value(spec.name, task, labels, candidate,
                                                            spec.threshold)
        if champion is not None:
            theirs = estimates[f"{key}.champion"] = metric_value(spec.name, task, labels,
                                                                 champion, spec.threshold)
            estimates[f"{key}.improvement"] = mine - theirs if better else theirs - mine
    intervals = bootstrap_intervals(statistics, len(labels), level, n_boot, seed,
                                    estimates=estimates)
    results = []
    for spec in specs:
        key, better = metric_key(spec), HIGHER_IS_BETTER[spec.name]
        mine = estimates[f"{key}.candidate"]
        if champion is None:
            results.append(MetricComparison(key, spec.name, better, mine,
                                            intervals[f"{key}.candidate"], status="skipped"))
            continue
        theirs = estimates[f"{key}.champion"]
        improvement = estimates[f"{key}.improvement"]
        allowed = spec.tolerance * abs(theirs) if spec.relative else spec.tolerance
        interval = intervals[f"{key}.improvement"]
        if not np.isfinite(improvement) or improvement >= -allowed:
            status = PASS if np.isfinite(improvement) else INCONCLUSIVE
        elif interval.upper < -allowed:
            status = FAIL
        else:
            status = INCONCLUSIVE
        results.append(MetricComparison(key, spec.name, better, mine,
                                        intervals[f"{key}.candidate"], theirs,
                                        intervals[f"{key}.champion"], improvement, interval,
                                        allowed, status))
    return results


def comparison_gate(comparisons: list[MetricComparison] | None, blocking: bool,
                    why_missing: str = "no champion to compare with") -> GateResult:
    if not comparisons or comparisons[0].champion is None:
        return skipped("comparison", blocking, why_missing)
    worse = [c for c in comparisons if c.status != PASS]
    failing = [c.key for c in comparisons if c.status == FAIL]
    unresolved = [c.key for c in comparisons if c.status == INCONCLUSIVE]

    def describe(c: MetricComparison) -> str:
        return f"{c.key} {c.candidate:.4f} vs {c.champion:.4f}"

    if failing:
        status, detail = FAIL, "worse than the champion: " + ", ".join(
            describe(c) for c in comparisons if c.status == FAIL)
    elif unresolved:
        status, detail = INCONCLUSIVE, (
            "below the champion, but within what the holdout can resolve: "
            + ", ".join(describe(c) for c in comparisons if c.status == INCONCLUSIVE))
    else:
        status, detail = PASS, "no metric below the champion: " + ", ".join(
            describe(c) for c in comparisons)
    return GateResult("comparison", status, blocking, observed=float(len(worse)), threshold=0.0,
                      detail=detail,
                      evidence={"metrics": [c.to_dict() for c in comparisons]})
