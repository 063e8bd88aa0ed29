"""Anytime-valid evidence for the canary judge (pure; numpy, imported when first used).

Two kinds of evidence, each a mixture likelihood ratio (an e-process) that may be looked at
after every tick without spending alpha by hand: by Ville's inequality the chance that it EVER
reaches 1/alpha while its null hypothesis holds is at most alpha.

- One version's rate (errors per request, requests over a latency threshold): Robbins'
  beta-binomial mixture. Inverted, it gives a confidence sequence [lower, upper] for the rate,
  valid simultaneously at every look (`rate_bounds`).
- Challenger against champion on the same traffic (`RatioSegment`, `worse_evidence`,
  `ratio_bounds`): while requests are routed at random with the challenger's share w, each
  event (an error, a slow request) comes from the challenger with probability
  p = w·θ / (w·θ + 1 − w), θ being the ratio of the challenger's event rate to the champion's.
  Given the events, their split is a Bernoulli sequence in θ alone, whatever the base rate, so
  one test serves a 0.1% and a 5% error rate alike. The share w is the one measured in the
  window: conditioning on the realised split is conservative (Hoeffding: sampling without
  replacement is dominated in convex order). Segments (one per traffic step, each with its own
  share) multiply: evidence carries across steps.

Mixing distribution over log θ: half-normal with scale `MIX_SCALE`, on a fixed grid, so small
effects (θ 1.2 - 3) gain evidence quickly and large ones too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

MIX_SCALE = 1.0
_MIX_POINTS = 48
_MIX_SPAN = 4.0     # log θ up to 4: ratios up to ~55 are weighed


def _mixture() -> tuple[tuple[float, float], ...]:
    step = _MIX_SPAN / _MIX_POINTS
    points = [step * (i + 0.5) for i in range(_MIX_POINTS)]
    weights = [math.exp(-0.5 * (x / MIX_SCALE) ** 2) for x in points]
    total = sum(weights)
    return tuple((x, w / total) for x, w in zip(points, weights, strict=True))


MIXTURE = _mixture()


# ---- one rate: beta-binomial mixture confidence sequence ----

_PRIOR_A, _PRIOR_B = 0.5, 0.5


def rate_log_evalue(events: int, trials: int, rate: float) -> float:
    """log of the beta-binomial mixture against `rate` (two-sided: large when the observed
    rate is far from `rate` either way)."""
    if trials <= 0:
        return 0.0
    rate = min(max(rate, 1e-12), 1 - 1e-12)
    a, b = _PRIOR_A, _PRIOR_B
    log_marginal = (math.lgamma(a + events) + math.lgamma(b + trials - events)
                    - math.lgamma(a + b + trials)
                    - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    log_null = events * math.log(rate) + (trials - events) * math.log1p(-rate)
    return log_marginal - log_null


@dataclass(frozen=True)
class Bounds:
    lower: float
    upper: float

    def as_list(self) -> list[float]:
        return [self.lower, self.upper]


def rate_bounds(events: int, trials: int, alpha: float) -> Bounds:
    """Confidence sequence for a rate: every rate whose e-value is under 1/alpha."""
    if trials <= 0:
        return Bounds(0.0, 1.0)
    threshold = math.log(1 / alpha)
    observed = events / trials

    def inside(rate: float) -> bool:
        return rate_log_evalue(events, trials, rate) < threshold

    return Bounds(_edge(inside, observed, 0.0), _edge(inside, observed, 1.0))


def _edge(inside, start: float, outward: float, bisections: int = 24) -> float:
    """The boundary between `start` (inside) and `outward` along a line, by bisection."""
    if inside(outward):
        return outward
    near, far = start, outward
    for _ in range(bisections):
        middle = (near + far) / 2
        if inside(middle):
            near = middle
        else:
            far = middle
    return near


# ---- challenger against champion: event-rate ratio ----

@dataclass(frozen=True)
class RatioSegment:
    """Events of both versions over one stretch of traffic with one routing share."""

    challenger_requests: int
    champion_requests: int
    challenger_events: int
    champion_events: int

    @property
    def share(self) -> float:
        total = self.challenger_requests + self.champion_requests
        return self.challenger_requests / total if total else 0.0

    def as_list(self) -> list[int]:
        return [self.challenger_requests, self.champion_requests, self.challenger_events,
                self.champion_events]

    @classmethod
    def from_list(cls, values: list[int]) -> RatioSegment:
        return cls(*(int(v) for v in values))


def _split_log_likelihood(w: float, log_theta, challenger: int, champion: int):
    """log-likelihood of the split for one log θ or an array of them (numpy)."""
    import numpy as np

    # p = wθ / (wθ + 1 − w); log p and log(1 − p) without overflow.
    a, b = math.log(w) + log_theta, math.log1p(-w)
    log_total = np.logaddexp(a, b)
    return challenger * (a - log_total) + champion * (b - log_total)


def _log_mixture(segments: tuple[RatioSegment, ...], log_null, direction: int):
    """log of the mixture e-value against θ = exp(log_null), alternatives on one side; for one
    log_null or an array of them."""
    import numpy as np

    offsets, log_weights = _mixture_arrays()
    nulls = np.asarray(log_null, dtype=float)[..., None]
    total = np.zeros(np.broadcast_shapes(nulls.shape, offsets.shape))
    for s in segments:
        w = s.share
        if not 0 < w < 1 or not (s.challenger_events or s.champion_events):
            continue
        total += (_split_log_likelihood(w, nulls + direction * offsets, s.challenger_events,
                                        s.champion_events)
                  - _split_log_likelihood(w, nulls, s.challenger_events, s.champion_events))
    return np.logaddexp.reduce(total + log_weights, axis=-1)


@lru_cache(maxsize=1)
def _mixture_arrays():
    import numpy as np

    return (np.array([x for x, _ in MIXTURE]), np.log(np.array([w for _, w in MIXTURE])))


def worse_evidence(segments: tuple[RatioSegment, ...], null_ratio: float = 1.0) -> float:
    """The e-value that the challenger's event rate exceeds `null_ratio` × the champion's."""
    return math.exp(min(700.0, float(_log_mixture(segments, math.log(null_ratio), +1))))


_RATIO_GRID_STEP = 0.05     # in log θ: bounds to within 5%
_RATIO_GRID_SPAN = 100.0


def ratio_bounds(segments: tuple[RatioSegment, ...], alpha: float) -> Bounds:
    """Confidence sequence for θ (each side at `alpha`): lower = the largest ratio the data rule
    out from below, upper = the smallest ruled out from above, on a grid of 5% steps between
    1/100 and 100 (0 and inf beyond it, or without events)."""
    import numpy as np

    if not any(s.challenger_events or s.champion_events for s in segments):
        return Bounds(0.0, math.inf)
    threshold = math.log(1 / alpha)
    span = math.log(_RATIO_GRID_SPAN)
    grid = np.arange(-span, span, _RATIO_GRID_STEP)
    too_small = _log_mixture(segments, grid, +1) >= threshold
    too_large = _log_mixture(segments, grid, -1) >= threshold
    ruled_low = np.flatnonzero(too_small & ~too_large)
    ruled_high = np.flatnonzero(too_large & ~too_small)
    lower = math.exp(grid[ruled_low.max()]) if ruled_low.size else 0.0
    upper = math.exp(grid[ruled_high.min()]) if ruled_high.size else math.inf
    return Bounds(lower, upper)


def events_to_rule_out(share: float, margin_ratio: float, alpha: float) -> float:
    """About how many events (both versions) it takes, when θ is really 1, for the evidence
    against θ = `margin_ratio` to reach 1/alpha: log(1/alpha) over the expected log-likelihood
    gain per event (a Kullback-Leibler divergence), doubled for the mixture's cost."""
    if not 0 < share < 1 or margin_ratio <= 1:
        return math.inf
    p0 = share
    p1 = share * margin_ratio / (share * margin_ratio + 1 - share)
    divergence = p0 * math.log(p0 / p1) + (1 - p0) * math.log((1 - p0) / (1 - p1))
    return 2 * math.log(1 / alpha) / divergence


def trials_to_bound(rate: float, limit: float, alpha: float) -> float:
    """About how many trials it takes for a rate's upper bound to fall under `limit` when the
    rate really is `rate` (inf when `limit` <= `rate`)."""
    if limit <= rate:
        return math.inf
    gap = limit - rate
    variance = max(rate * (1 - rate), 1e-6)
    level = math.log(1 / alpha)
    # Bernstein-type width: sqrt(2·var·L/n) + L/n, plus the mixture's log(n) cost (doubled L).
    return 2 * level * (2 * variance / gap ** 2 + 1 / gap)
