"""Split conformal prediction: calibrate on one part of the holdout, measure coverage on the other.

Nonconformity scores (lower = more conforming):
- LAC, "least ambiguous set-valued classifiers" (Sadinle, Lei & Wasserman 2019): s = 1 - p_y;
  the set is {k : 1 - p_k <= q}.
- APS, "adaptive prediction sets" (Romano, Sesia & Candes 2020), randomised: s = (sum of the
  probabilities ranked above y) + u * p_y with u ~ U(0, 1); the set is the classes whose score,
  with the same u, is <= q (a prefix of the classes by descending probability).
- Mondrian / class-conditional (Vovk et al. 2005): one quantile per true class, so coverage holds
  within every class; the set is {k : s(x, k) <= q_k}.
- absolute residual (Lei et al. 2018): s = |y - yhat|; interval yhat +- q.
- locally adaptive, normalised by a difficulty estimate sigma(x) > 0 (Papadopoulos et al. 2008;
  Lei et al. 2018): s = |y - yhat| / sigma(x); interval yhat +- q * sigma(x).
- CQR, conformalised quantile regression (Romano, Patterson & Candes 2019): with the model's
  quantiles lo(x), hi(x), s = max(lo - y, y - hi); interval [lo - q, hi + q].

The finite-sample quantile: q is the ceil((n + 1)(1 - alpha))-th smallest of the n calibration
scores (+inf when that exceeds n), which gives coverage >= 1 - alpha on exchangeable data (and
< 1 - alpha + 1/(n + 1) when scores have no ties). An example is covered when its true label's
(or value's) score is <= q, the same test that builds the set or interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.gates.bootstrap import Interval, band_status, clopper_pearson
from shared.gates.results import FAIL, INCONCLUSIVE, PASS, GateResult, skipped
from shared.gates.summaries import CoverageCounts


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    n = len(scores)
    if n == 0:
        raise ValueError("no calibration scores")
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return math.inf
    return float(np.partition(scores, rank - 1)[rank - 1])


def as_class_probabilities(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    return np.column_stack([1.0 - scores, scores]) if scores.ndim == 1 else scores


def lac_scores(probabilities: np.ndarray) -> np.ndarray:
    """s(x, k) for every class: (n, K)."""
    return 1.0 - probabilities


def aps_scores(probabilities: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Randomised APS s(x, k) for every class: (n, K)."""
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    above = np.cumsum(ranked, axis=1) - ranked
    scored: np.ndarray = above + u[:, None] * ranked
    result = np.empty_like(scored)
    np.put_along_axis(result, order, scored, axis=1)
    return result


def split_mask(n: int, calibration_fraction: float, seed: int, ordered: bool = False) -> np.ndarray:
    """True for calibration rows. Random by default; `ordered` calibrates on the first rows."""
    if ordered:
        mask = np.zeros(n, dtype=bool)
        mask[:int(round(n * calibration_fraction))] = True
        return mask
    mask = np.random.default_rng(seed).random(n) < calibration_fraction
    return mask


def _lac_set_sizes(probabilities: np.ndarray, thresholds: np.ndarray, test: np.ndarray,
                   rows: int = 16_384) -> int:
    """The number of (test row, class) pairs with 1 - p <= the class's threshold, a block of
    rows at a time so the block's scores stay in cache."""
    total = 0
    for start in range(0, len(probabilities), rows):
        block = probabilities[start:start + rows][test[start:start + rows]]
        total += int(np.count_nonzero(1.0 - block <= thresholds))
    return total


@dataclass(frozen=True)
class CoverageReport:
    method: str
    level: float
    coverage: float
    interval: Interval
    n_calibration: int
    n_test: int
    quantile: float | list[float]
    mean_size: float  # classifiers: mean set size; regressors: mean interval width
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    test_rows: RegressionTestRows | None = None  # regressors: the intervals on the test rows


@dataclass(frozen=True)
class RegressionTestRows:
    """Each test row's prediction, its conformal interval and whether the interval covered it."""

    prediction: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    covered: np.ndarray


def classifier_coverage(labels: np.ndarray, scores: np.ndarray, level: float = 0.9,
                        score: str = "lac", mondrian: bool = False,
                        calibration_fraction: float = 0.5, seed: int = 0,
                        confidence_level: float = 0.95,
                        class_names: list[str] | None = None,
                        ordered: bool = False,
                        calibrate: np.ndarray | None = None) -> CoverageReport:
    """`calibrate`, when given, marks the calibration rows (else `split_mask` draws them)."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=float)
    n = len(labels)
    alpha = 1 - level
    if calibrate is None:
        calibrate = split_mask(n, calibration_fraction, seed, ordered)
    else:
        calibrate = np.asarray(calibrate, dtype=bool)
    test = ~calibrate
    n_test = int(np.count_nonzero(test))
    if n_test == 0 or n_test == n:
        raise ValueError("the holdout is too small to split into calibration and test rows")
    # set_sizes(thresholds): the total size of the test rows' sets, class k in when s_k <= t_k
    set_sizes: Callable[[np.ndarray], int]
    if score == "lac" and scores.ndim == 1:
        # binary: s(x, 0) = p, s(x, 1) = 1 - p, without building the (n, 2) matrix
        k = 2
        true_scores = np.where(labels == 1, 1.0 - scores, scores)
        set_sizes = lambda t: (int(np.count_nonzero((scores <= t[0]) & test))  # noqa: E731
                               + int(np.count_nonzero((1.0 - scores <= t[1]) & test)))
    else:
        probabilities = as_class_probabilities(scores)
        k = probabilities.shape[1]
        if score == "lac":  # s = 1 - p, computed where needed rather than as an (n, K) matrix
            true_scores = 1.0 - probabilities[np.arange(n), labels]
            set_sizes = lambda t: _lac_set_sizes(probabilities, t, test)  # noqa: E731
        elif score == "aps":
            all_scores = aps_scores(probabilities, np.random.default_rng(seed + 1).random(n))
            true_scores = np.take_along_axis(all_scores, labels[:, None], axis=1)[:, 0]
            set_sizes = lambda t: int(np.count_nonzero(  # noqa: E731
                (all_scores <= t) & test[:, None]))
        else:
            raise ValueError(f"unknown classifier score {score!r}")
    if mondrian:
        quantiles = np.array([conformal_quantile(true_scores[calibrate & (labels == c)], alpha)
                              if np.any(calibrate & (labels == c)) else math.inf
                              for c in range(k)])
        covered = true_scores <= quantiles[labels]
        quantile: float | list[float] = quantiles.tolist()
    else:
        q = conformal_quantile(true_scores[calibrate], alpha)
        quantiles = np.full(k, q)
        covered = true_scores <= q
        quantile = q
    covered &= test
    counts = CoverageCounts(quantile, n - n_test, n_test, int(np.count_nonzero(covered)),
                            set_sizes(quantiles), np.bincount(labels[test], minlength=k),
                            np.bincount(labels, weights=covered, minlength=k))
    return coverage_from_counts(counts, f"{score}{'-mondrian' if mondrian else ''}", level,
                                confidence_level, class_names)


def coverage_from_counts(counts: CoverageCounts, method: str, level: float,
                         confidence_level: float = 0.95,
                         class_names: list[str] | None = None) -> CoverageReport:
    """A classifier's coverage report from its coverage counts (numpy's or Spark's)."""
    k = len(counts.class_counts)
    names = class_names or [str(c) for c in range(k)]
    class_counts, class_covered = counts.class_counts, counts.class_covered
    per_class_coverage = {
        names[c]: {"n": int(class_counts[c]),
                   "coverage": float(class_covered[c] / class_counts[c]),
                   "interval": clopper_pearson(int(class_covered[c]), int(class_counts[c]),
                                               confidence_level).to_dict()}
        for c in range(k) if class_counts[c]}
    hits, n_test = counts.hits, counts.n_test
    return CoverageReport(method=method, level=level, coverage=hits / n_test,
                          interval=clopper_pearson(hits, n_test, confidence_level),
                          n_calibration=counts.n_calibration, n_test=n_test,
                          quantile=counts.quantile, mean_size=counts.set_sizes / n_test,
                          per_class=per_class_coverage)


def regression_coverage(y: np.ndarray, prediction: np.ndarray | None = None, level: float = 0.9,
                        score: str = "absolute", difficulty: np.ndarray | None = None,
                        lower: np.ndarray | None = None, upper: np.ndarray | None = None,
                        calibration_fraction: float = 0.5, seed: int = 0,
                        confidence_level: float = 0.95, ordered: bool = False,
                        calibrate: np.ndarray | None = None) -> CoverageReport:
    y = np.asarray(y, dtype=float)
    if prediction is not None:
        center = np.asarray(prediction, dtype=float)
    elif lower is not None and upper is not None:
        center = (np.asarray(lower, dtype=float) + np.asarray(upper, dtype=float)) / 2
    else:
        raise ValueError("regression coverage needs predictions or the model's quantiles")
    # bounds_of(q, rows): each row's interval (lower, upper) for the conformal quantile q.
    bounds_of: Callable[[float, np.ndarray], tuple[np.ndarray, np.ndarray]]
    if score == "absolute":
        scores = np.abs(y - center)
        bounds_of = lambda q, rows: (center[rows] - q, center[rows] + q)  # noqa: E731
    elif score == "normalized":
        if difficulty is None:
            raise ValueError("normalized scores need a difficulty estimate")
        sigma = np.maximum(np.asarray(difficulty, dtype=float), 1e-12)
        scores = np.abs(y - center) / sigma
        bounds_of = lambda q, rows: (center[rows] - q * sigma[rows],  # noqa: E731
                                     center[rows] + q * sigma[rows])
    elif score == "cqr":
        if lower is None or upper is None:
            raise ValueError("cqr needs the model's lower and upper quantiles")
        scores = np.maximum(lower - y, y - upper)
        bounds_of = lambda q, rows: (lower[rows] - q, upper[rows] + q)  # noqa: E731
    else:
        raise ValueError(f"unknown regression score {score!r}")
    if calibrate is None:
        calibrate = split_mask(len(y), calibration_fraction, seed, ordered)
    else:
        calibrate = np.asarray(calibrate, dtype=bool)
    test = ~calibrate
    if calibrate.sum() == 0 or test.sum() == 0:
        raise ValueError("the holdout is too small to split into calibration and test rows")
    q = conformal_quantile(scores[calibrate], 1 - level)
    covered = scores[test] <= q
    hits = int(covered.sum())
    low, high = bounds_of(q, test)
    return CoverageReport(method=score, level=level, coverage=hits / len(covered),
                          interval=clopper_pearson(hits, len(covered), confidence_level),
                          n_calibration=int(calibrate.sum()), n_test=int(test.sum()),
                          quantile=q, mean_size=float(np.mean(high - low)),
                          test_rows=RegressionTestRows(center[test], low, high, covered))


def conformal_gate(report: CoverageReport | None, tolerance: float, blocking: bool,
                   why_missing: str = "no predictions to assess") -> GateResult:
    if report is None:
        return skipped("conformal", blocking, why_missing)
    low, high = report.level - tolerance, report.level + tolerance
    status = band_status(report.interval.lower, report.interval.upper, low, high)
    checked = {"marginal": status}
    if report.method.endswith("mondrian"):  # class-conditional coverage is the promise: check it
        for name, cls in report.per_class.items():
            checked[f"class {name}"] = band_status(cls["interval"]["lower"],
                                                   cls["interval"]["upper"], low, high)
    failing = [what for what, s in checked.items() if s == FAIL]
    unresolved = [what for what, s in checked.items() if s == INCONCLUSIVE]
    ci = f"[{report.interval.lower:.4f}, {report.interval.upper:.4f}]"
    if failing:
        overall, detail = FAIL, (f"coverage outside {report.level:.0%} +- {tolerance:.0%} for "
                                 f"{', '.join(failing)}; marginal {report.coverage:.4f} {ci}")
    elif unresolved:
        overall, detail = INCONCLUSIVE, (
            f"coverage {report.coverage:.4f} {ci}: the test rows cannot resolve "
            f"{report.level:.0%} +- {tolerance:.0%} for {', '.join(unresolved)}")
    else:
        overall, detail = PASS, (f"coverage {report.coverage:.4f} {ci} within "
                                 f"{report.level:.0%} +- {tolerance:.0%}")
    return GateResult("conformal", overall, blocking, observed=report.coverage,
                      threshold=report.level, detail=detail,
                      evidence={"method": report.method, "level": report.level,
                                "tolerance": tolerance, "coverage": report.coverage,
                                "interval": report.interval.to_dict(),
                                "n_calibration": report.n_calibration, "n_test": report.n_test,
                                "quantile": report.quantile, "mean_size": report.mean_size,
                                "per_class": report.per_class})
