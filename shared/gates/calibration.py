"""Expected Calibration Error, reliability tables, and the two calibration gates.

Definitions (Guo et al. 2017, "On Calibration of Modern Neural Networks"; the binned ECE of netcal,
with scikit-learn's `calibration_curve` binning rule):

- Bins B_1..B_M over the confidence. Equal-width: edges m/M. Equal-mass: the empirical quantiles
  of the confidences at m/M with numpy's linear interpolation (calibration_curve's
  strategy="quantile"). A confidence c falls in bin m when e_{m-1} < c <= e_m, the first bin also
  taking c = e_0; that is `np.searchsorted(edges[1:-1], c)`, calibration_curve's rule.
- ECE = sum_m |B_m|/n * |freq(B_m) - conf(B_m)|, freq the mean outcome and conf the mean
  confidence of the bin; MCE = the largest |gap| over non-empty bins.
- Kinds: `binary` - confidence P(y = positive class), outcome 1[y = positive] (the curve
  calibration_curve draws); `top_label` - confidence max_k p_k, outcome 1[argmax_k p_k = y] (Guo
  et al.); `classwise` - the mean over classes k of the binary ECE of (p_k, 1[y = k]) (Kull et
  al. 2019, "classwise-ECE"). `auto` is binary for two classes, top_label for more.

The interval around the ECE (`assess_calibration`) is built to contain the true calibration error
even when that is 0. The plug-in ECE is biased upward (it sums |noise|), so a percentile bootstrap
interval would exclude 0 even for a perfectly calibrated model. Here:

- upper bound: the (1+level)/2 percentile of the bootstrap ECE (rows resampled with replacement;
  above EXACT_LIMIT rows a moment-matched bin-level bootstrap: bin counts ~ Multinomial(n, n_b/n)
  and each bin's gap sum ~ Normal(K_b * mean_b, K_b * var_b), var_b from the bin's sums, with the
  within-bin variance of the confidence estimated on a sample of MOMENT_SAMPLE rows);
- lower bound: 0 when the holdout is consistent with perfect calibration - the observed ECE is
  within the `level` quantile of the ECEs that perfectly calibrated predictions with the same
  confidences produce ("consistency resampling", Broecker & Smith 2007; Vaicenavicius et al.
  2019) - otherwise the basic bootstrap bound 2*ECE - upper percentile, floored at 0.

The ECE gate passes when the upper bound is below the threshold, fails when the lower bound is at
or above it, and is inconclusive otherwise: the holdout cannot resolve the threshold.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from shared.gates.bootstrap import below_threshold_status
from shared.gates.results import FAIL, INCONCLUSIVE, PASS, GateResult, skipped

EXACT_LIMIT = 20_000  # rows up to which bootstrap replicates resample rows exactly
MOMENT_SAMPLE = 32_768  # rows sampled for the within-bin variance of the confidence


# ---- binning --------------------------------------------------------------------------------

def bin_edges(confidence: np.ndarray, n_bins: int, binning: str,
              sorted_confidence: np.ndarray | None = None) -> np.ndarray:
    if binning == "equal_width":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if binning != "equal_mass":
        raise ValueError(f"binning must be 'equal_width' or 'equal_mass', not {binning!r}")
    ordered = np.sort(confidence) if sorted_confidence is None else sorted_confidence
    return sorted_quantiles(ordered, np.linspace(0.0, 1.0, n_bins + 1))


def sorted_quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """np.quantile(..., method="linear") of an already sorted array, without re-sorting it."""
    position = np.asarray(q, dtype=float) * (len(ordered) - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, len(ordered) - 1)
    fraction = position - below
    quantiles: np.ndarray = ordered[below] + fraction * (ordered[above] - ordered[below])
    return quantiles


def quantiles_unsorted(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """sorted_quantiles(np.sort(values), q), bit for bit, without sorting: the order statistics
    it reads come from one np.partition."""
    position = np.asarray(q, dtype=float) * (len(values) - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, len(values) - 1)
    selected = np.partition(values, np.unique(np.concatenate([below, above])))
    fraction = position - below
    quantiles: np.ndarray = selected[below] + fraction * (selected[above] - selected[below])
    return quantiles


def _index_dtype(n_bins: int) -> type[np.signedinteger[Any]]:
    # room for bin + n_bins * outcome (see outcome_key)
    return np.int8 if 2 * n_bins <= 127 else np.int16 if 2 * n_bins <= 32_767 else np.intp


def bin_index(confidence: np.ndarray, edges: np.ndarray,
              start: np.ndarray | None = None) -> np.ndarray:
    """`np.searchsorted(edges[1:-1], confidence)` (+ `start`): how many inner edges lie below
    each value.

    For the usual few dozen bins, one comparison pass per edge into a small integer array is
    several times faster than the binary search and gives the same answer exactly."""
    inner = edges[1:-1]
    if len(inner) > 64:
        index = np.searchsorted(inner, confidence)
        return index if start is None else index + start
    index = (np.zeros(len(confidence), dtype=_index_dtype(len(edges) - 1)) if start is None
             else start)
    above = np.empty(len(confidence), dtype=bool)
    for edge in inner:
        np.greater(confidence, edge, out=above)
        index += above
    return index


def outcome_key(confidence: np.ndarray, outcome: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """bin + n_bins * outcome, as intp: one np.bincount of it gives per-bin sums split by outcome
    (intp because np.bincount would convert any other integer type on every call)."""
    n_bins = len(edges) - 1
    start = np.multiply(outcome, n_bins, dtype=_index_dtype(n_bins))
    return bin_index(confidence, edges, start).astype(np.intp, copy=False)


# ---- the reliability table ------------------------------------------------------------------

@dataclass(frozen=True)
class ReliabilityTable:
    """Per bin: rows, sum of confidences and of outcomes (and the second moments the bootstrap
    needs), from which counts, mean confidence, observed frequency and gap follow."""

    edges: np.ndarray
    counts: np.ndarray
    sum_confidence: np.ndarray
    sum_outcome: np.ndarray
    sum_confidence_squared: np.ndarray | None = None
    sum_confidence_outcome: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def mean_confidence(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean: np.ndarray = self.sum_confidence / self.counts
        return mean

    @property
    def observed_frequency(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            frequency: np.ndarray = self.sum_outcome / self.counts
        return frequency

    @property
    def gap(self) -> np.ndarray:
        """observed frequency - mean confidence (negative: over-confident)."""
        gap: np.ndarray = self.observed_frequency - self.mean_confidence
        return gap

    @property
    def ece(self) -> float:
        return float(np.abs(self.sum_outcome - self.sum_confidence).sum() / max(self.n, 1))

    @property
    def mce(self) -> float:
        filled = self.counts > 0
        return float(np.abs(self.gap[filled]).max()) if filled.any() else 0.0

    def gap_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per bin: mean and variance of (confidence - outcome) over its rows."""
        if self.sum_confidence_squared is None or self.sum_confidence_outcome is None:
            raise ValueError("the table was built without second moments")
        counts = np.maximum(self.counts, 1)
        mean = (self.sum_confidence - self.sum_outcome) / counts
        # outcome is 0/1, so outcome^2 = outcome
        second = (self.sum_confidence_squared - 2 * self.sum_confidence_outcome
                  + self.sum_outcome) / counts
        return mean, np.maximum(second - mean ** 2, 0.0)

    def null_variance(self) -> np.ndarray:
        """Per bin: mean of c(1 - c), the variance of (c - outcome) under perfect calibration."""
        if self.sum_confidence_squared is None:
            raise ValueError("the table was built without second moments")
        variance: np.ndarray = ((self.sum_confidence - self.sum_confidence_squared)
                                / np.maximum(self.counts, 1))
        return variance

    def rows(self) -> list[dict[str, Any]]:
        confidence, frequency, gap = self.mean_confidence, self.observed_frequency, self.gap
        return [{"bin": m, "lower": float(self.edges[m]), "upper": float(self.edges[m + 1]),
                 "count": int(self.counts[m]),
                 "mean_confidence": float(confidence[m]) if self.counts[m] else None,
                 "observed_frequency": float(frequency[m]) if self.counts[m] else None,
                 "gap": float(gap[m]) if self.counts[m] else None}
                for m in range(len(self.counts))]


def _table_from_key(edges: np.ndarray, key: np.ndarray, confidence: np.ndarray, n_bins: int,
                    moments: bool) -> ReliabilityTable:
    split_counts = np.bincount(key, minlength=2 * n_bins)
    split_confidence = np.bincount(key, weights=confidence, minlength=2 * n_bins)
    counts = split_counts[:n_bins] + split_counts[n_bins:]
    sum_confidence = split_confidence[:n_bins] + split_confidence[n_bins:]
    squared = None
    if moments:
        squared = _sum_confidence_squared(key, confidence, counts, sum_confidence, n_bins)
    return ReliabilityTable(
        edges=edges, counts=counts, sum_confidence=sum_confidence,
        sum_outcome=split_counts[n_bins:].astype(float),
        sum_confidence_squared=squared,
        sum_confidence_outcome=split_confidence[n_bins:] if moments else None)


def _sum_confidence_squared(key: np.ndarray, confidence: np.ndarray, counts: np.ndarray,
                            sum_confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Per bin sum of c^2 = n_b * (mean_b^2 + within-bin variance of c). The variance, a small
    second-order term of the interval's width, is estimated from a systematic sample of at most
    MOMENT_SAMPLE rows; exact when the table has no more rows than that."""
    step = max(1, len(key) // MOMENT_SAMPLE)
    if step == 1:
        return np.bincount(key % n_bins, weights=confidence * confidence, minlength=n_bins)
    sample_bin = key[::step] % n_bins
    sample = confidence[::step]
    n = np.bincount(sample_bin, minlength=n_bins)
    first = np.bincount(sample_bin, weights=sample, minlength=n_bins)
    second = np.bincount(sample_bin, weights=sample * sample, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.where(n > 1, second / n - (first / n) ** 2, 0.0)
        mean = np.where(counts > 0, sum_confidence / counts, 0.0)
    squared: np.ndarray = counts * (mean ** 2 + np.maximum(variance, 0.0))
    return squared


def reliability_table(confidence: ArrayLike, outcome: ArrayLike, n_bins: int = 15,
                      binning: str = "equal_width", moments: bool = False) -> ReliabilityTable:
    confidence = np.asarray(confidence, dtype=float)
    outcome = np.asarray(outcome)
    edges = bin_edges(confidence, n_bins, binning)
    return _table_from_key(edges, outcome_key(confidence, outcome, edges), confidence, n_bins,
                           moments)


# ---- confidence/outcome "tracks" for each kind of ECE ---------------------------------------

def resolve_kind(kind: str, n_classes: int) -> str:
    if kind == "auto":
        return "binary" if n_classes == 2 else "top_label"
    if kind == "binary" and n_classes != 2:
        raise ValueError(f"the binary ECE needs two classes, not {n_classes}")
    if kind not in ("binary", "top_label", "classwise"):
        raise ValueError(f"unknown ECE kind {kind!r}")
    return kind


def n_classes_of(scores: np.ndarray) -> int:
    return 2 if scores.ndim == 1 else scores.shape[1]


# (name, confidence, outcome): one series whose ECE is part of the chosen ECE.
Track = tuple[str, np.ndarray, np.ndarray]


def calibration_tracks(labels: ArrayLike, scores: ArrayLike, kind: str) -> list[Track]:
    """(name, confidence, outcome) pairs whose ECEs are averaged into the chosen ECE.

    `labels` are class indices 0..K-1; `scores` the positive-class probability (n,) for a binary
    model or class probabilities (n, K).
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    kind = resolve_kind(kind, n_classes_of(scores))
    if scores.ndim == 1:
        if kind == "binary":
            return [("positive", scores, labels == 1)]
        if kind == "top_label":
            predicted_positive = scores >= 0.5
            return [("top_label", np.maximum(scores, 1.0 - scores),
                     predicted_positive == (labels == 1))]
        return [("class_0", 1.0 - scores, labels == 0), ("class_1", scores, labels == 1)]
    if kind == "top_label":
        predicted = scores.argmax(axis=1)
        return [("top_label", scores[np.arange(len(scores)), predicted], predicted == labels)]
    return [(f"class_{k}", np.ascontiguousarray(scores[:, k]), labels == k)
            for k in range(scores.shape[1])]


def expected_calibration_error(labels: ArrayLike, scores: ArrayLike, kind: str = "auto",
                               n_bins: int = 15, binning: str = "equal_width") -> float:
    tracks = calibration_tracks(labels, scores, kind)
    return float(np.mean([reliability_table(c, o, n_bins, binning).ece for _, c, o in tracks]))


# ---- the interval ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationAssessment:
    kind: str
    ece: float
    lower: float
    upper: float
    null_quantile: float  # the ECE a perfectly calibrated model shows here at `level`
    level: float
    tables: dict[str, ReliabilityTable]
    method: str  # "exact" or "moments"

    @property
    def primary_table(self) -> ReliabilityTable:
        return next(iter(self.tables.values()))


def _exact_replicates(tracks: list[Track], indexes: list[np.ndarray], keys: list[np.ndarray],
                      n_bins: int, n_boot: int, rng: np.random.Generator, null: bool,
                      probabilities: np.ndarray | None) -> np.ndarray:
    n = len(indexes[0])
    replicates = np.empty(n_boot)
    for b in range(n_boot):
        rows = rng.integers(0, n, n)
        total = 0.0
        if null and probabilities is not None:  # classwise: one categorical draw per row
            cumulative = np.cumsum(probabilities[rows], axis=1)
            drawn = (rng.random(n)[:, None] > cumulative).sum(axis=1)
        for t, (_, confidence, _) in enumerate(tracks):
            c = confidence[rows]
            if null:
                outcome = (drawn == t) if probabilities is not None else rng.random(n) < c
                key = indexes[t][rows] + n_bins * outcome
            else:
                key = keys[t][rows]
            sums = np.bincount(key, weights=c, minlength=2 * n_bins)
            counts = np.bincount(key, minlength=2 * n_bins)
            total += np.abs(counts[n_bins:] - sums[:n_bins] - sums[n_bins:]).sum() / n
        replicates[b] = total / len(tracks)
    return replicates


def _moment_replicates(tables: Collection[ReliabilityTable], n_boot: int, rng: np.random.Generator,
                       null: bool) -> np.ndarray:
    total = np.zeros(n_boot)
    for table in tables:
        n = table.n
        drawn = rng.multinomial(n, table.counts / n, size=n_boot)
        if null:
            mean, variance = np.zeros(len(table.counts)), table.null_variance()
        else:
            mean, variance = table.gap_moments()
        sums = drawn * mean + np.sqrt(drawn * variance) * rng.standard_normal(drawn.shape)
        total += np.abs(sums).sum(axis=1) / n
    replicates: np.ndarray = total / len(tables)
    return replicates


def assess_calibration(labels: ArrayLike, scores: ArrayLike, kind: str = "auto", n_bins: int = 15,
                       binning: str = "equal_width", level: float = 0.95, n_boot: int = 200,
                       seed: int = 0) -> CalibrationAssessment:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    if len(labels) == 0:
        raise ValueError("no rows to assess calibration on")
    tracks = calibration_tracks(labels, scores, kind)
    resolved = resolve_kind(kind, n_classes_of(scores))
    n = len(labels)
    exact = n <= EXACT_LIMIT
    indexes, keys, tables = [], [], {}
    for name, confidence, outcome in tracks:
        edges = bin_edges(confidence, n_bins, binning)
        key = outcome_key(confidence, outcome, edges)
        tables[name] = _table_from_key(edges, key, confidence, n_bins, moments=not exact)
        if exact:  # the resampling below needs the bin of each row on its own
            indexes.append(key - n_bins * np.asarray(outcome, dtype=np.intp))
        keys.append(key)
    if not exact:
        return assess_tables(tables, resolved, level, n_boot, seed)
    ece = float(np.mean([table.ece for table in tables.values()]))
    rng = np.random.default_rng(seed)
    probabilities = None
    if resolved == "classwise":  # the null draws one label per row from its probabilities
        probabilities = np.column_stack([1 - scores, scores]) if scores.ndim == 1 else scores
    boot = _exact_replicates(tracks, indexes, keys, n_bins, n_boot, rng, False, None)
    null = _exact_replicates(tracks, indexes, keys, n_bins, n_boot, rng, True, probabilities)
    return _assessment(resolved, ece, boot, null, level, tables, "exact")


def assess_tables(tables: dict[str, ReliabilityTable], kind: str, level: float = 0.95,
                  n_boot: int = 200, seed: int = 0) -> CalibrationAssessment:
    """The assessment from reliability tables with second moments alone (a summarised holdout,
    or any holdout above EXACT_LIMIT rows): the moment-matched bin-level bootstrap."""
    ece = float(np.mean([table.ece for table in tables.values()]))
    rng = np.random.default_rng(seed)
    boot = _moment_replicates(tables.values(), n_boot, rng, null=False)
    null = _moment_replicates(tables.values(), n_boot, rng, null=True)
    return _assessment(kind, ece, boot, null, level, tables, "moments")


def _assessment(kind: str, ece: float, boot: np.ndarray, null: np.ndarray, level: float,
                tables: dict[str, ReliabilityTable], method: str) -> CalibrationAssessment:
    upper = float(np.quantile(boot, (1 + level) / 2))
    null_quantile = float(np.quantile(null, level))
    lower = 0.0 if ece <= null_quantile else max(0.0, 2 * ece - upper)
    return CalibrationAssessment(kind=kind, ece=ece, lower=lower, upper=max(upper, ece),
                                 null_quantile=null_quantile, level=level, tables=tables,
                                 method=method)


# ---- gates ----------------------------------------------------------------------------------

def rows_to_resolve(upper: float, threshold: float, rows: int) -> int | None:
    """Roughly how many rows a well-calibrated model needs to pass: where the interval's upper
    end (`upper` at `rows`), shrinking as 1/sqrt(rows), falls below the threshold. (A model
    that is off by more than the threshold never gets there.) None without a threshold."""
    if threshold <= 0 or rows <= 0:
        return None
    return max(rows + 1, math.ceil(rows * (upper / threshold) ** 2))


def ece_gate(assessment: CalibrationAssessment | None, threshold: float, blocking: bool,
             why_missing: str = "no probabilities to assess") -> GateResult:
    if assessment is None:
        return skipped("ece", blocking, why_missing)
    a = assessment
    interval = f"[{a.lower:.4f}, {a.upper:.4f}]"
    status = below_threshold_status(a.lower, a.upper, threshold)
    rows = max(t.n for t in a.tables.values())
    needed = None
    if status == PASS:
        detail = f"ECE {a.ece:.4f}, {a.level:.0%} interval {interval} < {threshold}"
    elif status == FAIL:
        detail = (f"ECE {a.ece:.4f}, {a.level:.0%} interval {interval} is at or above "
                  f"{threshold}")
    else:
        needed = rows_to_resolve(a.upper, threshold, rows)
        detail = (f"ECE {a.ece:.4f}, {a.level:.0%} interval {interval} straddles {threshold}: "
                  f"the holdout ({rows} rows) is too small to resolve the threshold (a "
                  f"perfectly calibrated model would show up to {a.null_quantile:.4f} here); "
                  f"a well-calibrated model needs about {needed} rows to pass")
    return GateResult("ece", status, blocking, observed=a.ece, threshold=threshold, detail=detail,
                      evidence={"rows": rows, "rows_to_resolve": needed,
                                "kind": a.kind, "ece": a.ece, "lower": a.lower, "upper": a.upper,
                                "level": a.level, "null_quantile": a.null_quantile,
                                "interval_method": a.method,
                                "mce": max(t.mce for t in a.tables.values()),
                                "bins": {name: t.rows() for name, t in a.tables.items()}})


def wilson_interval(successes: np.ndarray, counts: np.ndarray,
                    level: float) -> tuple[np.ndarray, np.ndarray]:
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    n = np.maximum(counts, 1).astype(float)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return centre - half, centre + half


def judge_bins(table: ReliabilityTable, max_gap: float, min_bin_count: int,
               level: float) -> list[dict[str, Any]]:
    """Each non-empty bin's verdict: `within` (its gap's interval fits inside +-max_gap),
    `deviates` (the interval lies beyond it), `unresolved` (straddles), or `too_small` (fewer than
    `min_bin_count` rows, or an interval wider than the whole +-max_gap band, so no outcome could
    be judged)."""
    low, high = wilson_interval(table.sum_outcome, table.counts, level)
    confidence = table.mean_confidence
    judged = []
    for row, lo, hi in zip(table.rows(), low, high, strict=True):
        if row["count"] == 0:
            continue
        gap_low, gap_high = lo - confidence[row["bin"]], hi - confidence[row["bin"]]
        if row["count"] < min_bin_count or (hi - lo) > 2 * max_gap:
            verdict = "too_small"
        elif gap_low > max_gap or gap_high < -max_gap:
            verdict = "deviates"
        elif gap_low >= -max_gap and gap_high <= max_gap:
            verdict = "within"
        else:
            verdict = "unresolved"
        judged.append({**row, "gap_lower": float(gap_low), "gap_upper": float(gap_high),
                       "verdict": verdict})
    return judged


def reliability_gate(assessment: CalibrationAssessment | None, max_gap: float,
                     min_bin_count: int, blocking: bool) -> GateResult:
    if assessment is None:
        return skipped("reliability", blocking, "no probabilities to assess")
    bins = {name: judge_bins(table, max_gap, min_bin_count, assessment.level)
            for name, table in assessment.tables.items()}
    flat = [(name, b) for name, rows in bins.items() for b in rows]
    judged = [b for _, b in flat if b["verdict"] != "too_small"]
    small = [f"{name}#{b['bin']} (n={b['count']})" for name, b in flat
             if b["verdict"] == "too_small"]
    deviating = [f"{name}#{b['bin']} gap {b['gap']:+.3f}" for name, b in flat
                 if b["verdict"] == "deviates"]
    unresolved = [f"{name}#{b['bin']}" for name, b in flat if b["verdict"] == "unresolved"]
    observed = max((abs(b["gap"]) for b in judged), default=None)
    small_note = f"; too small to judge: {', '.join(small)}" if small else ""
    if deviating:
        status, detail = FAIL, f"bins deviate by more than {max_gap}: {', '.join(deviating)}"
    elif not judged:
        status, detail = INCONCLUSIVE, "no bin has enough rows to judge"
    elif unresolved:
        status = INCONCLUSIVE
        detail = f"bins the holdout cannot resolve against {max_gap}: {', '.join(unresolved)}"
    else:
        status, detail = PASS, f"all {len(judged)} judged bins within {max_gap}"
    return GateResult("reliability", status, blocking, observed=observed, threshold=max_gap,
                      detail=detail + small_note,
                      evidence={"bins": bins, "too_small": small, "level": assessment.level})
