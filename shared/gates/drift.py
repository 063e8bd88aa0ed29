"""Data drift of the evaluation set against the training/reference data, feature by feature.

- PSI, the population stability index as commonly defined (e.g. Yurdakul 2018):
  PSI = sum_i (c_i - r_i) * ln(c_i / r_i) over bins i, r and c the reference and current
  proportions. Numeric bins are the reference's deciles (n_bins quantile bins, numpy's linear
  interpolation, duplicate edges merged) with open ends, a bin holding x when e_{i-1} < x <= e_i;
  categorical bins are the categories. Missing values form a bin of their own. An empty bin would
  make the log infinite, so every proportion is floored at epsilon (default 1e-4, i.e. 0.01%)
  before the sum. Conventional reading: < 0.1 stable, 0.1-0.2 moderate shift (warn), > 0.2
  significant shift (fail).
- Numeric columns also get the two-sample Kolmogorov-Smirnov statistic D = sup_x |F_r(x) - F_c(x)|
  on the non-missing values (scipy.stats.ks_2samp's D) with its asymptotic p-value (see
  `ks_p_value`), unless the KS test is off (`ks=False`, the policy's `drift.ks_test = false`):
  then nothing is sorted - the reference's edges come from a partition, each value's bin from
  comparisons with the edges - and the PSI is the same, bit for bit.
- Categorical columns also get Pearson's chi-square test of homogeneity on the 2 x K table of
  counts (scipy.stats.chi2_contingency, no continuity correction needed for K > 2) and the
  Jensen-Shannon distance of the two proportions in base 2, within [0, 1]
  (scipy.spatial.distance.jensenshannon).

With large holdouts every p-value is tiny, so the verdict uses the effect sizes (PSI, and the
optional KS / JS thresholds), and the tests are evidence.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray

from shared.gates.calibration import bin_index, quantiles_unsorted, sorted_quantiles
from shared.gates.results import FAIL, PASS, WARN, GateResult, skipped
from shared.gates.summaries import PsiCounts

if TYPE_CHECKING:
    import pandas as pd

EXACT_KS_SIZE = 10_000
FloatArray = NDArray[np.float64]


class DriftBin(TypedDict):
    """One bin of a feature: its label and the share of each sample that falls in it."""

    bin: str
    reference: float
    current: float


@dataclass(frozen=True)
class FeatureDrift:
    column: str
    kind: str  # "numeric" or "categorical"
    psi: float
    n_reference: int
    n_current: int
    test: str  # "ks", "chi2", or "none" (the KS test off)
    statistic: float | None
    p_value: float | None
    js_distance: float | None = None
    bins: list[DriftBin] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"column": self.column, "kind": self.kind, "psi": self.psi, "test": self.test,
                "statistic": self.statistic, "p_value": self.p_value,
                "js_distance": self.js_distance, "n_reference": self.n_reference,
                "n_current": self.n_current, "bins": self.bins}


def population_stability_index(reference_counts: ArrayLike, current_counts: ArrayLike,
                               epsilon: float = 1e-4) -> float:
    reference = np.maximum(np.asarray(reference_counts, float) / np.sum(reference_counts), epsilon)
    current = np.maximum(np.asarray(current_counts, float) / np.sum(current_counts), epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


def ks_statistic_sorted(first: FloatArray, second: FloatArray, stride: int = 64) -> float:
    """sup_x |F1(x) - F2(x)| of two sorted samples without NaN, exactly.

    Between two consecutive distinct values a < b of `second`, F2 is constant and F1 rises from
    F1(a) to F1(b-), so the supremum is the largest gap at, or just before, a value of `second`.
    F2 there follows from the value's position in `second`; F1 takes a search in `first`.
    Instead of searching for every value, the gaps are computed at every `stride`-th distinct
    value (more apart for large samples); between two such values a' < b' no gap can exceed
    max(F1(b') - F2(a'-), F2(b') - F1(a'-)), so only the stretches whose bound beats the best gap
    found are then searched value by value."""
    n1, n2 = len(first), len(second)
    run_start = None  # position in `second` of each distinct value's first occurrence
    distinct = second
    if n2 > 1:
        changes = np.concatenate([[True], second[1:] != second[:-1]])
        if not changes.all():
            run_start = np.flatnonzero(changes)
            distinct = second[run_start]
    m = len(distinct)

    def gaps(index: NDArray[np.intp]) -> tuple[FloatArray, ...]:
        values = distinct[index]
        f1_at = np.searchsorted(first, values, "right") / n1
        f1_before = np.searchsorted(first, values, "left") / n1
        if run_start is None:
            f2_before = index / n2
            f2_at = f2_before + 1.0 / n2
        else:
            f2_before = run_start[index] / n2
            ends = np.append(run_start, n2)
            f2_at = ends[index + 1] / n2
        gap = np.maximum(np.abs(f1_at - f2_at), np.abs(f1_before - f2_before))
        return gap, f1_at, f1_before, f2_at, f2_before

    stride = max(stride, m // 65_536)
    if m <= 4 * stride:
        return float(gaps(np.arange(m))[0].max())
    coarse = np.arange(0, m, stride)
    if coarse[-1] != m - 1:
        coarse = np.append(coarse, m - 1)
    gap, f1_at, f1_before, f2_at, f2_before = gaps(coarse)
    best = float(gap.max())
    bound = np.maximum(f1_at[1:] - f2_before[:-1], f2_at[1:] - f1_before[:-1])
    stretches = np.flatnonzero(bound > best)
    if stretches.size == 0:
        return best
    starts, stops = coarse[stretches] + 1, coarse[stretches + 1]  # the values strictly between
    lengths = stops - starts
    inside = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    if inside.size:
        best = max(best, float(gaps(inside)[0].max()))
    return best


def ks_p_value(statistic: float, n1: int, n2: int) -> float:
    """scipy.stats.ks_2samp's asymptotic p-value: kstwo.sf(D, round(n1 n2 / (n1 + n2))). Above
    EXACT_KS_SIZE effective rows, where kstwo's exact series takes seconds, the limiting
    Kolmogorov distribution with Stephens' (1970) small-sample correction instead:
    Q((sqrt(en) + 0.12 + 0.11 / sqrt(en)) * D)."""
    m, n = sorted([float(n1), float(n2)], reverse=True)
    effective = m * n / (m + n)
    if effective <= EXACT_KS_SIZE:
        from scipy.stats import kstwo

        return float(kstwo.sf(statistic, np.round(effective)))
    from scipy.special import kolmogorov

    root = np.sqrt(effective)
    return float(kolmogorov((root + 0.12 + 0.11 / root) * statistic))


def _labels(inner: np.ndarray) -> list[str]:
    labels = [f"<= {inner[0]:.6g}" if len(inner) else "all"]
    labels += [f"({low:.6g}, {high:.6g}]" for low, high in zip(inner[:-1], inner[1:], strict=True)]
    return labels + ([f"> {inner[-1]:.6g}"] if len(inner) else [])



def _with_missing_bin(labels: list[str], reference_counts: np.ndarray,
                      current_counts: np.ndarray, missing: tuple[int, int]
                      ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The bins, with a "missing" bin appended when either side has missing values."""
    if not any(missing):
        return labels, reference_counts, current_counts
    return (labels + ["missing"], np.append(reference_counts, missing[0]),
            np.append(current_counts, missing[1]))

def numeric_psi(column: str, reference: ArrayLike, current: ArrayLike, n_bins: int = 10,
                epsilon: float = 1e-4) -> FeatureDrift:
    """numeric_drift's PSI and bins without the KS test, and without sorting either sample."""
    return psi_from_counts(psi_counts(column, reference, current, n_bins), epsilon)


def psi_counts(column: str, reference: ArrayLike, current: ArrayLike,
               n_bins: int = 10) -> PsiCounts:
    """The column's counts on the reference's quantile edges (the numpy path's summary)."""
    reference, current = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    missing_reference, missing_current = np.isnan(reference), np.isnan(current)
    valid_reference = reference[~missing_reference] if missing_reference.any() else reference
    valid_current = current[~missing_current] if missing_current.any() else current
    if len(valid_reference) == 0 or len(valid_current) == 0:
        raise ValueError(f"column {column!r} has no non-missing values to compare")
    inner = reference_edges(quantiles_unsorted(valid_reference, decile_levels(n_bins)))
    return PsiCounts(column, inner, counts_on_edges(valid_reference, inner),
                     counts_on_edges(valid_current, inner),
                     len(reference) - len(valid_reference), len(current) - len(valid_current))


def decile_levels(n_bins: int) -> np.ndarray:
    """The quantile levels of the reference's inner edges."""
    levels: np.ndarray = np.arange(1, n_bins) / n_bins
    return levels


def reference_edges(quantiles: np.ndarray) -> np.ndarray:
    """The inner edges: the reference's quantiles, duplicates merged."""
    inner: np.ndarray = np.unique(quantiles)
    return inner


def counts_on_edges(values: np.ndarray, inner: np.ndarray) -> np.ndarray:
    # x in bin i when inner[i-1] < x <= inner[i]: the number of edges below x
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    counts: np.ndarray = np.bincount(bin_index(values, edges), minlength=len(inner) + 1)
    return counts


def psi_from_counts(counts: PsiCounts, epsilon: float = 1e-4) -> FeatureDrift:
    labels, reference_counts, current_counts = _with_missing_bin(
        _labels(counts.inner), counts.reference, counts.current,
        (counts.missing_reference, counts.missing_current))
    n_reference = int(counts.reference.sum()) + counts.missing_reference
    n_current = int(counts.current.sum()) + counts.missing_current
    return FeatureDrift(counts.column, "numeric",
                        population_stability_index(reference_counts, current_counts, epsilon),
                        n_reference, n_current, "none", None, None,
                        bins=_bin_rows(labels, reference_counts, current_counts))


def numeric_drift(column: str, reference: ArrayLike, current: ArrayLike, n_bins: int = 10,
                  epsilon: float = 1e-4) -> FeatureDrift:
    reference = np.sort(np.asarray(reference, dtype=float))  # NaN sorts last
    current = np.sort(np.asarray(current, dtype=float))
    valid_reference = reference[:np.searchsorted(reference, np.nan, side="left")]
    valid_current = current[:np.searchsorted(current, np.nan, side="left")]
    if len(valid_reference) == 0 or len(valid_current) == 0:
        raise ValueError(f"column {column!r} has no non-missing values to compare")
    inner = np.unique(sorted_quantiles(valid_reference, np.arange(1, n_bins) / n_bins))
    reference_counts = np.diff(np.concatenate(
        [[0], np.searchsorted(valid_reference, inner, side="right"), [len(valid_reference)]]))
    current_counts = np.diff(np.concatenate(
        [[0], np.searchsorted(valid_current, inner, side="right"), [len(valid_current)]]))
    labels, reference_counts, current_counts = _with_missing_bin(
        _labels(inner), reference_counts, current_counts,
        (len(reference) - len(valid_reference), len(current) - len(valid_current)))
    statistic = ks_statistic_sorted(valid_reference, valid_current)
    return FeatureDrift(column, "numeric",
                        population_stability_index(reference_counts, current_counts, epsilon),
                        len(reference), len(current), "ks", statistic,
                        ks_p_value(statistic, len(valid_reference), len(valid_current)),
                        bins=_bin_rows(labels, reference_counts, current_counts))


def categorical_drift(column: str, reference: ArrayLike | pd.Series, current: ArrayLike | pd.Series,
                      epsilon: float = 1e-4) -> FeatureDrift:
    import pandas as pd
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    reference_counts = _as_series(reference).value_counts(dropna=False)
    current_counts = _as_series(current).value_counts(dropna=False)
    table = pd.concat([reference_counts, current_counts], axis=1).fillna(0)
    table = table.loc[(table.sum(axis=1) > 0)]
    ref, cur = table.iloc[:, 0].to_numpy(float), table.iloc[:, 1].to_numpy(float)
    if len(table) > 1:
        chi2 = chi2_contingency(np.vstack([ref, cur]), correction=False)
        statistic, p_value = float(chi2.statistic), float(chi2.pvalue)
    else:
        statistic, p_value = 0.0, 1.0
    js = float(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    labels = ["missing" if pd.isna(value) else str(value) for value in table.index]
    return FeatureDrift(column, "categorical", population_stability_index(ref, cur, epsilon),
                        int(ref.sum()), int(cur.sum()), "chi2", statistic, p_value,
                        js_distance=js, bins=_bin_rows(labels, ref, cur))


def _as_series(values: ArrayLike | pd.Series) -> pd.Series:
    import pandas as pd

    return values if isinstance(values, pd.Series) else pd.Series(values)


def _bin_rows(labels: Sequence[str], reference_counts: NDArray[np.number[Any]],
              current_counts: NDArray[np.number[Any]]) -> list[DriftBin]:
    reference_total = max(np.sum(reference_counts), 1)
    current_total = max(np.sum(current_counts), 1)
    return [{"bin": label, "reference": float(r / reference_total),
             "current": float(c / current_total)}
            for label, r, c in zip(labels, reference_counts, current_counts, strict=True)]


def is_categorical(series: pd.Series, declared: set[str]) -> bool:
    import pandas as pd

    return series.name in declared or not (pd.api.types.is_numeric_dtype(series.dtype)
                                           and not pd.api.types.is_bool_dtype(series.dtype))


def drift_report(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str] | None = None,
                 categorical_columns: Collection[str] = (), n_bins: int = 10,
                 epsilon: float = 1e-4, ks: bool = True) -> list[FeatureDrift]:
    """Drift of every column present in both frames (or of `columns`); `ks=False` leaves out
    the KS test of numeric columns (and their sorting)."""
    numeric = numeric_drift if ks else numeric_psi
    chosen = columns if columns is not None else [c for c in current.columns
                                                  if c in reference.columns]
    declared = set(categorical_columns)
    report = []
    for column in chosen:
        if is_categorical(current[column], declared) or is_categorical(reference[column],
                                                                       declared):
            report.append(categorical_drift(column, reference[column], current[column], epsilon))
        else:
            report.append(numeric(column, reference[column].to_numpy(),
                                  current[column].to_numpy(), n_bins, epsilon))
    return report


def drift_gate(drifts: list[FeatureDrift] | None, psi_warn: float, psi_fail: float,
               blocking: bool, ks_warn: float | None = None, js_warn: float | None = None,
               why_missing: str = "no reference data configured") -> GateResult:
    if drifts is None:
        return skipped("drift", blocking, why_missing)
    if not drifts:
        return skipped("drift", blocking, "no column in common with the reference data")
    failing = [d for d in drifts if d.psi >= psi_fail]
    warned = [d for d in drifts if psi_warn <= d.psi < psi_fail
              or (ks_warn is not None and d.statistic is not None and d.test == "ks"
                  and d.statistic > ks_warn)
              or (js_warn is not None and d.js_distance is not None and d.js_distance > js_warn)]
    worst = max(drifts, key=lambda d: d.psi)
    if failing:
        status = FAIL
        detail = "PSI >= {}: {}".format(psi_fail, ", ".join(f"{d.column} {d.psi:.3f}"
                                                           for d in failing))
    elif warned:
        status = WARN
        detail = "shift: " + ", ".join(
            f"{d.column} PSI {d.psi:.3f}" + (f" KS {d.statistic:.3f}" if d.test == "ks" else
                                             f" JS {d.js_distance:.3f}" if d.js_distance
                                             is not None else "") for d in warned)
    else:
        status = PASS
        detail = f"{len(drifts)} columns stable; largest PSI {worst.psi:.3f} ({worst.column})"
    return GateResult("drift", status, blocking, observed=worst.psi, threshold=psi_fail,
                      detail=detail, evidence={"psi_warn": psi_warn, "psi_fail": psi_fail,
                                               "features": [d.to_dict() for d in drifts]})
