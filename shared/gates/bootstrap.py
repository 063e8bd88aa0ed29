"""Confidence intervals for the headline numbers, and the rule that turns an interval into a
pass / fail / inconclusive verdict.

Statistics are written against row weights: `statistics(rows, weights)` gets the indexes of the
rows it may look at (b of them) and a (replicates, b) matrix of multinomial resampling counts, and
returns named arrays of one value per replicate. One resample serves every value, so candidate and
champion are resampled together and their differences are paired.

- Up to `exact_limit` rows: the ordinary nonparametric bootstrap (Efron 1979), each replicate n
  rows drawn with replacement; percentile interval.
- Above it: the Bag of Little Bootstraps (Kleiner, Talwalkar, Sarkar & Jordan 2014): s random
  subsets of b = n**0.6 distinct rows, each resampled r times so that every replicate still
  represents n rows. Per subset, the percentiles of the resampled estimates minus the subset's own
  estimate; those averaged over the subsets and added to the full-data estimate. The
  Multinomial(n, 1/b) resampling counts are drawn as independent Poisson(n/b) counts (the Poisson
  bootstrap, Hanley & MacGibbon 2006: the same distribution up to the total being n +- sqrt(n),
  which every statistic here normalises away), and for n/b >= 100 by their normal approximation
  N(n/b, n/b). Cost O(s * r * b) instead of O(B * n).

Proportions (conformal coverage) use the exact Clopper-Pearson interval instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.gates.results import FAIL, INCONCLUSIVE, PASS, GateStatus

EXACT_LIMIT = 20_000
BLB_EXPONENT = 0.6
BLB_SUBSETS = 10
BLB_REPLICATES = 50
POISSON_AS_NORMAL = 100.0
_CHUNK_CELLS = 2_000_000  # weight-matrix cells per chunk of exact replicates

Statistics = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Interval:
    lower: float
    upper: float
    level: float
    method: str

    def to_dict(self) -> dict[str, float | str]:
        return {"lower": self.lower, "upper": self.upper, "level": self.level,
                "method": self.method}


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_intervals(statistics: Statistics, n: int, level: float = 0.95,
                        n_boot: int = 200, seed: int = 0, exact_limit: int = EXACT_LIMIT,
                        estimates: dict[str, float] | None = None) -> dict[str, Interval]:
    """Intervals for every named value `statistics(rows, weights)` returns. `estimates` are the
    full-data values (computed here when not given); only the bag of little bootstraps needs
    them, to centre its intervals."""
    if n < 2:
        raise ValueError("a bootstrap needs at least two rows")
    rng = np.random.default_rng(seed)
    if n <= exact_limit:
        rows = np.arange(n)
        values: dict[str, list[np.ndarray]] = {}
        chunk = max(1, min(n_boot, _CHUNK_CELLS // n))
        for start in range(0, n_boot, chunk):
            size = min(chunk, n_boot - start)
            draws = rng.integers(0, n, size=(size, n))
            draws += (np.arange(size) * n)[:, None]
            weights = np.bincount(draws.ravel(), minlength=size * n)
            weights = weights.reshape(size, n).astype(float)
            for name, replicates in statistics(rows, weights).items():
                values.setdefault(name, []).append(np.asarray(replicates, dtype=float))
        return {name: Interval(*_percentiles(np.concatenate(parts), level), level, "bootstrap")
                for name, parts in values.items()}
    if estimates is None:
        estimates = {name: float(np.asarray(value).ravel()[0]) for name, value in
                     statistics(np.arange(n), np.ones((1, n))).items()}
    subset = max(2, int(n ** BLB_EXPONENT))
    bounds: dict[str, list[tuple[float, float]]] = {}
    for _ in range(BLB_SUBSETS):
        rows = np.sort(rng.choice(n, size=subset, replace=False))
        weights = np.vstack([np.full(subset, n / subset),  # the subset's own estimate first
                             _resampling_counts(rng, n / subset, (BLB_REPLICATES, subset))])
        for name, replicates in statistics(rows, weights).items():
            replicates = np.asarray(replicates, dtype=float)
            # the spread of the resampled estimates around the subset's own estimate
            bounds.setdefault(name, []).append(_percentiles(replicates[1:] - replicates[0],
                                                            level))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan: an undefined statistic
        return {name: Interval(estimates[name] + float(np.nanmean([b[0] for b in found])),
                               estimates[name] + float(np.nanmean([b[1] for b in found])),
                               level, "bag-of-little-bootstraps")
                for name, found in bounds.items()}


def _resampling_counts(rng: np.random.Generator, mean: float,
                       shape: tuple[int, int]) -> np.ndarray:
    """Poisson(mean) counts; above POISSON_AS_NORMAL their normal approximation, which numpy
    draws several times faster (the weights need not be integers: every statistic here is a
    weighted one)."""
    if mean < POISSON_AS_NORMAL:
        counts: np.ndarray = rng.poisson(mean, size=shape).astype(float)
        return counts
    weights = rng.standard_normal(shape)
    weights *= np.sqrt(mean)
    weights += mean
    np.maximum(weights, 0.0, out=weights)
    return weights


def clopper_pearson(successes: int, n: int, level: float = 0.95) -> Interval:
    from scipy.special import betaincinv  # the beta quantile, without importing scipy.stats

    alpha = 1 - level
    lower = 0.0 if successes == 0 else float(betaincinv(successes, n - successes + 1, alpha / 2))
    upper = 1.0 if successes == n else float(betaincinv(successes + 1, n - successes,
                                                        1 - alpha / 2))
    return Interval(lower, upper, level, "clopper-pearson")


def below_threshold_status(lower: float, upper: float, threshold: float) -> GateStatus:
    """For 'the value must be below threshold': pass when the whole interval is below it, fail
    when the whole interval is at or above it, otherwise the data cannot resolve it."""
    if upper < threshold:
        return PASS
    if lower >= threshold:
        return FAIL
    return INCONCLUSIVE


def band_status(lower: float, upper: float, low: float, high: float) -> GateStatus:
    """For 'the value must lie in [low, high]': pass when the interval does, fail when the
    interval misses the band entirely, otherwise inconclusive."""
    if lower >= low and upper <= high:
        return PASS
    if upper < low or lower > high:
        return FAIL
    return INCONCLUSIVE
