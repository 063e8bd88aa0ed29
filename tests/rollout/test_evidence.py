"""The judge's anytime-valid evidence: confidence sequences that cover under repeated looks,
e-values that stay under 1/alpha under the null as often as promised, and power when it is not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.rollout import evidence
from shared.rollout.evidence import RatioSegment

ALPHA = 0.1
LOOKS = np.arange(100, 5001, 100)


def bernoulli_paths(rng, rate: float, runs: int) -> np.ndarray:
    """Cumulative event counts at every look, one row per run."""
    return np.cumsum(rng.random((runs, LOOKS[-1])) < rate, axis=1)[:, LOOKS - 1]


@pytest.mark.parametrize("rate", [0.001, 0.01, 0.05])
def test_the_rate_confidence_sequence_covers_at_every_look(rate):
    rng = np.random.default_rng(17)
    paths = bernoulli_paths(rng, rate, 200)
    missed = 0
    for counts in paths:
        for events, trials in zip(counts, LOOKS, strict=True):
            bounds = evidence.rate_bounds(int(events), int(trials), ALPHA)
            if not bounds.lower <= rate <= bounds.upper:
                missed += 1
                break
    assert missed / len(paths) <= ALPHA


def test_a_fixed_sample_interval_looked_at_every_time_does_not_cover():
    """The same paths with a 90% Wald interval recomputed at every look: the truth falls out
    far more often than 10% of the time, so the coverage test above can tell."""
    rng = np.random.default_rng(17)
    rate = 0.05
    paths = bernoulli_paths(rng, rate, 200)
    estimate = paths / LOOKS
    half_width = 1.645 * np.sqrt(estimate * (1 - estimate) / LOOKS)
    missed = (np.abs(estimate - rate) > half_width).any(axis=1).mean()
    assert missed > 2 * ALPHA


def rollout_evidence(rng, base: float, ratio: float, shares=(0.05, 0.25, 0.5),
                     ticks=40, per_tick=400):
    """The largest worse-e-value seen over a three-step rollout, looked at every tick."""
    done: list[RatioSegment] = []
    largest = 0.0
    for share in shares:
        counts = np.zeros(4, dtype=int)
        for _ in range(ticks):
            n_challenger = rng.binomial(per_tick, share)
            n_champion = per_tick - n_challenger
            counts += (n_challenger, n_champion, rng.binomial(n_challenger, base * ratio),
                       rng.binomial(n_champion, base))
            segments = (*done, RatioSegment(*counts.tolist()))
            largest = max(largest, evidence.worse_evidence(segments))
        done.append(RatioSegment(*counts.tolist()))
    return largest


@pytest.mark.parametrize("base", [0.001, 0.01, 0.05])
def test_worse_evidence_for_equal_rates_rarely_reaches_one_over_alpha(base):
    rng = np.random.default_rng(29)
    runs = 100
    alarms = sum(rollout_evidence(rng, base, 1.0) >= 1 / ALPHA for _ in range(runs))
    assert alarms / runs <= ALPHA


def test_worse_evidence_finds_a_real_regression():
    rng = np.random.default_rng(31)
    found = sum(rollout_evidence(rng, 0.01, 2.0) >= 1 / ALPHA for _ in range(20))
    assert found >= 18


def test_ratio_bounds_hold_the_truth_and_exclude_one_when_clearly_worse():
    even = evidence.ratio_bounds((RatioSegment(5000, 5000, 50, 50),), 0.05)
    assert even.lower < 1 < even.upper
    worse = evidence.ratio_bounds((RatioSegment(5000, 5000, 150, 50),), 0.05)
    assert 1 < worse.lower < 3 < worse.upper
    # The shares differ per segment: 20 of 120 events at a 10% share is twice the champion's rate.
    skewed = evidence.ratio_bounds((RatioSegment(10_000, 90_000, 20, 90),), 0.05)
    assert skewed.lower < 2 < skewed.upper
    assert evidence.ratio_bounds((RatioSegment(100, 100, 0, 0),), 0.05).upper == math.inf


def test_rate_bounds_without_trials_are_the_whole_range():
    assert evidence.rate_bounds(0, 0, 0.05).as_list() == [0.0, 1.0]
    zero = evidence.rate_bounds(0, 3000, 0.05)
    assert zero.lower == 0.0 and 0 < zero.upper < 0.003


def test_the_time_estimates_shrink_with_a_wider_margin():
    assert evidence.trials_to_bound(0.01, 0.02, 0.025) < evidence.trials_to_bound(
        0.01, 0.015, 0.025)
    assert evidence.trials_to_bound(0.01, 0.01, 0.025) == math.inf
