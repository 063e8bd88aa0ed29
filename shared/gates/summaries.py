"""Small mergeable summaries of a holdout: what the gate math needs, and nothing per row.

Each summary is computed on any part of the data and added up (`+`) across parts, so a holdout
too big for one process is summarised where it lives (Spark, shared/gates/spark.py) and judged
by the same pure functions that judge the numpy path's summary of the same rows:

- `ReliabilityTable` (shared/gates/calibration.py): per reliability bin, on given edges, the rows
  and the sums of confidence, outcome, confidence^2 and confidence*outcome. ECE, the max bin gap
  and the moment bootstrap of the ECE interval follow (`merge_tables` adds two).
- `PsiCounts`: a numeric column's counts on the reference's bin edges, and its missing values.
- `GroupConfusion`: per sensitive group, the 2x2 counts (predicted, actual) of fairness.
- `ScoreHistogram`: per label, score counts on fixed edges; the ROC AUC to within the resolution
  of the edges (`auc_bounds`: exact when no bin holds both a positive and a negative).
- `CoverageCounts`: split-conformal coverage counts on the test rows, given the quantile.
- exact order statistics (`order_statistics`) by bucket refinement: pass 1 counts the values per
  coarse bucket, with each bucket's min and max, which finds the bucket holding the k-th
  smallest value; pass 2 reads only the values in that bucket (refined again while they are too
  many) and picks the order statistic exactly. Used for the conformal quantile and the
  reference's quantile edges, where the numpy path uses np.partition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shared.gates.calibration import ReliabilityTable

N_BUCKETS = 4096  # buckets per refinement pass
COLLECT_LIMIT = 200_000  # values read in full once a bucket holds no more than this


def _added(first: np.ndarray | None, second: np.ndarray | None) -> np.ndarray | None:
    return None if first is None or second is None else first + second


def merge_tables(first: ReliabilityTable, second: ReliabilityTable) -> ReliabilityTable:
    if not np.array_equal(first.edges, second.edges):
        raise ValueError("reliability tables on different edges cannot be merged")
    return ReliabilityTable(
        edges=first.edges, counts=first.counts + second.counts,
        sum_confidence=first.sum_confidence + second.sum_confidence,
        sum_outcome=first.sum_outcome + second.sum_outcome,
        sum_confidence_squared=_added(first.sum_confidence_squared,
                                      second.sum_confidence_squared),
        sum_confidence_outcome=_added(first.sum_confidence_outcome,
                                      second.sum_confidence_outcome))


def reliability_sums(confidence: np.ndarray, outcome: np.ndarray,
                     edges: np.ndarray) -> ReliabilityTable:
    """The table of one part of the data on given edges, with exact second moments."""
    from shared.gates.calibration import bin_index

    n_bins = len(edges) - 1
    index = np.asarray(bin_index(confidence, edges), dtype=np.intp)
    outcome = np.asarray(outcome, dtype=float)
    return ReliabilityTable(
        edges=edges, counts=np.bincount(index, minlength=n_bins),
        sum_confidence=np.bincount(index, weights=confidence, minlength=n_bins),
        sum_outcome=np.bincount(index, weights=outcome, minlength=n_bins),
        sum_confidence_squared=np.bincount(index, weights=confidence * confidence,
                                           minlength=n_bins),
        sum_confidence_outcome=np.bincount(index, weights=confidence * outcome,
                                           minlength=n_bins))


@dataclass(frozen=True)
class PsiCounts:
    """A numeric column on the reference's inner edges (bin i holds inner[i-1] < x <= inner[i],
    open at both ends): reference and current counts per bin, and missing values of each."""

    column: str
    inner: np.ndarray
    reference: np.ndarray
    current: np.ndarray
    missing_reference: int = 0
    missing_current: int = 0

    def __add__(self, other: PsiCounts) -> PsiCounts:
        if self.column != other.column or not np.array_equal(self.inner, other.inner):
            raise ValueError("PSI counts of different columns or edges cannot be merged")
        return PsiCounts(self.column, self.inner, self.reference + other.reference,
                         self.current + other.current,
                         self.missing_reference + other.missing_reference,
                         self.missing_current + other.missing_current)


@dataclass(frozen=True)
class GroupConfusion:
    """Per group (None: missing), counts[g, predicted, actual]."""

    groups: tuple[object, ...]
    counts: np.ndarray

    def __add__(self, other: GroupConfusion) -> GroupConfusion:
        groups = list(self.groups) + [g for g in other.groups if g not in self.groups]
        counts = np.zeros((len(groups), 2, 2), dtype=np.int64)
        counts[:len(self.groups)] += self.counts
        for row, group in enumerate(other.groups):
            counts[groups.index(group)] += other.counts[row]
        return GroupConfusion(tuple(groups), counts)


@dataclass(frozen=True)
class ScoreHistogram:
    """Per label (0: negative, 1: positive), score counts in the bins of `edges` (bin i holds
    edges[i-1] < s <= edges[i], the first also s = edges[0])."""

    edges: np.ndarray
    negative: np.ndarray
    positive: np.ndarray

    def __add__(self, other: ScoreHistogram) -> ScoreHistogram:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("score histograms on different edges cannot be merged")
        return ScoreHistogram(self.edges, self.negative + other.negative,
                              self.positive + other.positive)

    def auc(self) -> float:
        """ROC AUC counting a positive and a negative in the same bin as a tie (one half): the
        exact AUC when no bin holds both, otherwise within `resolution()` of it."""
        below = np.cumsum(self.negative) - self.negative
        pairs = float(self.positive.sum()) * float(self.negative.sum())
        if pairs == 0:
            return float("nan")
        return float((self.positive * (below + 0.5 * self.negative)).sum() / pairs)

    def resolution(self) -> float:
        """The most the AUC can differ from the exact one: half the share of the
        positive-negative pairs that share a bin."""
        pairs = float(self.positive.sum()) * float(self.negative.sum())
        return float(0.5 * (self.positive * self.negative).sum() / pairs) if pairs else 0.0


def score_histogram(labels: np.ndarray, scores: np.ndarray, edges: np.ndarray) -> ScoreHistogram:
    from shared.gates.calibration import bin_index

    index = np.asarray(bin_index(scores, edges), dtype=np.intp)
    positive = np.asarray(labels) == 1
    n_bins = len(edges) - 1
    return ScoreHistogram(edges, np.bincount(index[~positive], minlength=n_bins),
                          np.bincount(index[positive], minlength=n_bins))


@dataclass(frozen=True)
class CoverageCounts:
    """Split-conformal coverage on the test rows for the calibration quantile(s): test rows,
    covered ones, the total of the set sizes, and per class test rows and covered ones."""

    quantile: float | list[float]
    n_calibration: int
    n_test: int
    hits: int
    set_sizes: int
    class_counts: np.ndarray
    class_covered: np.ndarray

    def __add__(self, other: CoverageCounts) -> CoverageCounts:
        if self.quantile != other.quantile or self.n_calibration != other.n_calibration:
            raise ValueError("coverage counts of different quantiles cannot be merged")
        return CoverageCounts(self.quantile, self.n_calibration, self.n_test + other.n_test,
                              self.hits + other.hits, self.set_sizes + other.set_sizes,
                              self.class_counts + other.class_counts,
                              self.class_covered + other.class_covered)


@dataclass(frozen=True)
class HoldoutSummary:
    """All a gate run needs of a summarised holdout (and its drift reference)."""

    rows: int
    calibration_kind: str = "binary"
    calibration: dict[str, ReliabilityTable] = field(default_factory=dict)  # by track
    diagram: ReliabilityTable | None = None  # the candidate's diagram (top-label table)
    coverage: CoverageCounts | None = None
    confusion: GroupConfusion | None = None
    drift: list[PsiCounts] | None = None
    auc: ScoreHistogram | None = None
    class_names: tuple[str, ...] = ("0", "1")


# ---- exact order statistics by bucket refinement --------------------------------------------

@dataclass(frozen=True)
class BucketStats:
    """Per bucket of [lo, hi] (see `bucket_of`): values, their min and max."""

    counts: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray

    def __add__(self, other: BucketStats) -> BucketStats:
        return BucketStats(self.counts + other.counts, np.fmin(self.minimum, other.minimum),
                           np.fmax(self.maximum, other.maximum))


def bucket_scale(lo: float, hi: float, n_buckets: int) -> float:
    return n_buckets / (hi - lo) if hi > lo else 0.0


def bucket_of(values: np.ndarray, lo: float, scale: float, n_buckets: int) -> np.ndarray:
    """floor((v - lo) * scale) clipped to the buckets: monotone in v, so the values of one bucket
    are exactly those between its min and max (Spark computes the same expression)."""
    index = np.floor((values - lo) * scale)
    clipped: np.ndarray = np.clip(index, 0, n_buckets - 1).astype(np.intp)
    return clipped


def bucket_stats(values: np.ndarray, lo: float, hi: float,
                 n_buckets: int = N_BUCKETS) -> BucketStats:
    """Pass 1 on one part of the data, over its values within [lo, hi]."""
    inside = values[(values >= lo) & (values <= hi)]
    index = bucket_of(inside, lo, bucket_scale(lo, hi, n_buckets), n_buckets)
    counts = np.bincount(index, minlength=n_buckets)
    minimum = np.full(n_buckets, np.nan)
    maximum = np.full(n_buckets, np.nan)
    np.fmin.at(minimum, index, inside)
    np.fmax.at(maximum, index, inside)
    return BucketStats(counts, minimum, maximum)


class OrderSource(Protocol):
    """Where the values live: counts, bucket statistics and values within a closed range."""


    def bucket_stats(self, lo: float, hi: float, n_buckets: int) -> BucketStats: ...

    def values_between(self, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
        """The values within any of the closed ranges (one read for all of them)."""
        ...


@dataclass(frozen=True)
class PartitionedValues:
    """The numpy OrderSource: values held in parts, each summarised on its own and merged."""

    parts: Sequence[np.ndarray]


    def bucket_stats(self, lo: float, hi: float, n_buckets: int) -> BucketStats:
        stats = [bucket_stats(p, lo, hi, n_buckets) for p in self.parts]
        total = stats[0]
        for more in stats[1:]:
            total = total + more
        return total

    def values_between(self, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
        return np.concatenate([p[within(p, ranges)] for p in self.parts])


def within(values: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    inside = np.zeros(len(values), dtype=bool)
    for lo, hi in ranges:
        inside |= (values >= lo) & (values <= hi)
    return inside


def order_statistics(source: OrderSource, ks: Sequence[int], lo: float, hi: float, count: int,
                     n_buckets: int = N_BUCKETS,
                     collect_limit: int = COLLECT_LIMIT) -> dict[int, float]:
    """The k-th smallest (1-based) of the `count` values within [lo, hi] for every k, exactly:
    read in full when they are few, else refined within the bucket that holds each k."""
    if any(not 1 <= k <= count for k in ks):
        raise ValueError(f"no order statistics {sorted(ks)} of {count} values")
    if hi <= lo:  # every value left is the same
        return {k: lo for k in ks}
    if count <= collect_limit:
        values = np.sort(source.values_between([(lo, hi)]))
        return {k: float(values[k - 1]) for k in ks}
    stats = source.bucket_stats(lo, hi, n_buckets)
    cumulative = np.cumsum(stats.counts)
    by_bucket: dict[int, list[int]] = {}
    for k in ks:  # the first bucket reaching k values holds the k-th
        by_bucket.setdefault(int(np.searchsorted(cumulative, k)), []).append(k)
    ranges = {b: (float(stats.minimum[b]), float(stats.maximum[b])) for b in by_bucket}
    small = [b for b in by_bucket if stats.counts[b] <= collect_limit]
    if sum(int(stats.counts[b]) for b in small) > collect_limit:
        small = []
    # the small buckets' values in one read (buckets are disjoint ranges: monotone in v)
    read = source.values_between([ranges[b] for b in small]) if small else np.empty(0)
    found = {}
    for bucket, wanted in by_bucket.items():
        before = int(cumulative[bucket - 1]) if bucket else 0
        lo, hi = ranges[bucket]
        if bucket in small:
            values = np.sort(read[(read >= lo) & (read <= hi)])
            inner = {k - before: float(values[k - before - 1]) for k in wanted}
        else:
            inner = order_statistics(source, [k - before for k in wanted], lo, hi,
                                     int(stats.counts[bucket]), n_buckets, collect_limit)
        found.update({k: inner[k - before] for k in wanted})
    return found


def order_statistic(source: OrderSource, k: int, lo: float, hi: float, count: int,
                    n_buckets: int = N_BUCKETS, collect_limit: int = COLLECT_LIMIT) -> float:
    """The k-th smallest (1-based) of the `count` values within [lo, hi], exactly."""
    return order_statistics(source, [k], lo, hi, count, n_buckets, collect_limit)[k]


def conformal_rank(n: int, alpha: float) -> int | None:
    """The rank of the split-conformal quantile among n calibration scores; None: +inf."""
    rank = math.ceil((n + 1) * (1 - alpha))
    return None if rank > n else rank


def linear_quantiles(source: OrderSource, q: np.ndarray, n: int, lo: float, hi: float,
                     n_buckets: int = N_BUCKETS,
                     collect_limit: int = COLLECT_LIMIT) -> np.ndarray:
    """np.quantile(values, q) (linear interpolation) of the n values within [lo, hi], from exact
    order statistics; the same arithmetic as calibration.sorted_quantiles, so bit for bit."""
    position = np.asarray(q, dtype=float) * (n - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, n - 1)
    ranks = [int(r) + 1 for r in np.unique(np.concatenate([below, above]))]
    needed = order_statistics(source, ranks, lo, hi, n, n_buckets, collect_limit)
    lower = np.array([needed[int(r) + 1] for r in below])
    upper = np.array([needed[int(r) + 1] for r in above])
    fraction = position - below
    quantiles: np.ndarray = lower + fraction * (upper - lower)
    return quantiles


# ---- the summary as JSON (what the Databricks job hands back) --------------------------------

def _table_dict(table: ReliabilityTable) -> dict[str, Any]:
    return {name: None if value is None else np.asarray(value).tolist()
            for name, value in vars(table).items()}


def _table_of(data: dict[str, Any]) -> ReliabilityTable:
    def array(name: str) -> Any:
        return None if data.get(name) is None else np.asarray(data[name])

    return ReliabilityTable(array("edges"), array("counts"), array("sum_confidence"),
                            array("sum_outcome"), array("sum_confidence_squared"),
                            array("sum_confidence_outcome"))


def summary_to_dict(summary: HoldoutSummary) -> dict[str, Any]:
    coverage, confusion, auc = summary.coverage, summary.confusion, summary.auc
    return {
        "rows": summary.rows, "calibration_kind": summary.calibration_kind,
        "class_names": list(summary.class_names),
        "calibration": {name: _table_dict(t) for name, t in summary.calibration.items()},
        "diagram": None if summary.diagram is None else _table_dict(summary.diagram),
        "coverage": None if coverage is None else {
            **vars(coverage), "class_counts": coverage.class_counts.tolist(),
            "class_covered": coverage.class_covered.tolist()},
        "confusion": None if confusion is None else {
            "groups": list(confusion.groups), "counts": confusion.counts.tolist()},
        "drift": None if summary.drift is None else [
            {**vars(c), "inner": c.inner.tolist(), "reference": c.reference.tolist(),
             "current": c.current.tolist()} for c in summary.drift],
        "auc": None if auc is None else {name: np.asarray(value).tolist()
                                         for name, value in vars(auc).items()}}


def summary_from_dict(data: dict[str, Any]) -> HoldoutSummary:
    coverage, confusion, auc = data["coverage"], data["confusion"], data["auc"]
    return HoldoutSummary(
        rows=data["rows"], calibration_kind=data["calibration_kind"],
        class_names=tuple(data["class_names"]),
        calibration={name: _table_of(t) for name, t in data["calibration"].items()},
        diagram=None if data["diagram"] is None else _table_of(data["diagram"]),
        coverage=None if coverage is None else CoverageCounts(**{
            **coverage, "class_counts": np.asarray(coverage["class_counts"], dtype=np.int64),
            "class_covered": np.asarray(coverage["class_covered"], dtype=float)}),
        confusion=None if confusion is None else GroupConfusion(
            tuple(confusion["groups"]), np.asarray(confusion["counts"], dtype=np.int64)),
        drift=None if data["drift"] is None else [
            PsiCounts(**{**c, "inner": np.asarray(c["inner"], dtype=float),
                         "reference": np.asarray(c["reference"], dtype=np.int64),
                         "current": np.asarray(c["current"], dtype=np.int64)})
            for c in data["drift"]],
        auc=None if auc is None else ScoreHistogram(**{name: np.asarray(value)
                                                       for name, value in auc.items()}))
