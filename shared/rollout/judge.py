"""The canary judge (pure): challenger against champion on the same traffic, with anytime-valid
evidence (shared/rollout/evidence.py) that may be looked at after every tick.

Rolling back needs the challenger SHOWN worse; promoting needs it SHOWN no worse than the
champion by more than the policy's margins. Point estimates decide nothing.

Shown worse (ROLLBACK): any of four e-values reaches 1/(alpha/4). By Ville's inequality each
reaches it with probability at most alpha/4 over the whole rollout when its null holds, so a
challenger no worse than its champion is rolled back with probability at most `alpha`:
- errors: the challenger's error rate above `rollback_error_ratio` (default 1.1) × the
  champion's (event-rate ratio θ > θ0). Still anytime-valid for every challenger no worse than
  the champion: the split's likelihood ratio is monotone in θ, so the mixture against θ0 is a
  supermartingale under every θ <= θ0, θ = 1 included, and Ville's bound holds unchanged. The
  tolerance is not a cut in alpha: under θ = 1 the evidence against θ0 drifts down by
  KL(p(1) || p(θ0)) per event, so long rollouts of equal models stop accumulating chance
  excursions, while a real 3x or 5x regression loses little (its distance from 1.1 is nearly
  its distance from 1). A challenger between 1 and θ0 is not rolled back on errors, and is
  promoted only if its upper bound clears the promotion margin (1 + error_margin_relative);
- error SLA: the challenger's error rate above `max_error_rate` (its confidence sequence's lower
  bound over the cap) - unless the champion's is shown above the cap too, when the comparison
  with the champion is what counts;
- latency: more of the challenger's latencies / `max_p99_latency_ratio` than of the champion's
  above their pooled median (a slowdown beyond the tolerated factor across the bulk);
- tail: the same above their pooled p99.
Evidence carries across steps: each step adds a segment with its own traffic share.

Shown no worse (ADVANCE, PROMOTE at the last step), at a look with the step's minimum bake and
requests: the upper bound of the challenger's error rate (over the whole rollout) at or under
the champion's rate plus max(`error_margin_absolute`, `error_margin_relative` × champion's rate),
and the upper bound of its share of requests slower than `max_p99_latency_ratio` × the
champion's p99 at or under `latency_tail_share` (1%: its p99 within the ratio). Each bound at
alpha/2. Before the last step both limits are scaled by 100 / the next step's percent, so what
the next step could cost on all traffic stays within the promotion margins.

Otherwise EXTEND (bake another period) up to `max_extensions` times; after that an intermediate
step advances while nothing is shown worse (exposure grows only without evidence of harm), and
the last step HOLDs: promotion waits until the evidence is in, judged at every look.

Every verdict carries its figures (rates, e-values, bounds, thresholds) and the estimated time
to a decision at the observed traffic, so a slow rollout says how slow up front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from shared.rollout import evidence
from shared.rollout.evidence import RatioSegment
from shared.rollout.policy import RolloutPolicy
from shared.rollout.quality import PredictionComparison, prediction_shift
from shared.serving.base import VersionHealth, WeightedSamples

ROLLBACK_TESTS = 4


class Action(str, Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    EXTEND = "extend"


@dataclass(frozen=True)
class TestResult:
    """One e-value, reported as an anytime-valid p-value (1/e, at most 1)."""

    name: str
    statistic: float        # the e-value
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value <= self.alpha

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": self.statistic, "p_value": self.p_value,
                "alpha": self.alpha, "significant": self.significant}


def e_test(name: str, e_value: float, alpha: float) -> TestResult:
    e_value = min(e_value, 1e300)
    return TestResult(name, e_value, min(1.0, 1 / e_value) if e_value > 0 else 1.0, alpha)


@dataclass(frozen=True)
class Window:
    """What the shell measured for one look."""

    ready: bool
    start: float            # measurement window start (after warm-up), epoch seconds
    end: float
    champion: VersionHealth | None
    challenger: VersionHealth | None
    detail: str = ""
    predictions: PredictionComparison | None = None    # model quality, where the shell has it


@dataclass(frozen=True)
class StepEvidence:
    """What one step contributed (kept on the rollout when the step is done)."""

    errors: RatioSegment
    slow: RatioSegment          # above the pooled median (challenger scaled by the ratio)
    tail: RatioSegment          # above the pooled p99 (challenger scaled by the ratio)
    over_p99: int = 0           # challenger requests above ratio × the champion's p99
    latency_requests: int = 0   # challenger requests with a latency

    def as_dict(self) -> dict[str, Any]:
        return {"errors": self.errors.as_list(), "slow": self.slow.as_list(),
                "tail": self.tail.as_list(), "over_p99": self.over_p99,
                "latency_requests": self.latency_requests}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepEvidence:
        return cls(RatioSegment.from_list(data["errors"]), RatioSegment.from_list(data["slow"]),
                   RatioSegment.from_list(data["tail"]), int(data.get("over_p99", 0)),
                   int(data.get("latency_requests", 0)))


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    figures: dict[str, float] = field(default_factory=dict)
    tests: tuple[TestResult, ...] = ()
    time_to_decision_seconds: float | None = None
    looked: bool = False        # evidence was computed
    full_evidence: bool = False
    step: dict[str, Any] | None = None  # this step's StepEvidence, for the rollout to keep

    def summary(self) -> dict[str, Any]:
        return {"action": self.action.value, "reason": self.reason, "figures": self.figures,
                "tests": [t.as_dict() for t in self.tests],
                "time_to_decision_seconds": self.time_to_decision_seconds}


def quantile(samples: WeightedSamples, q: float) -> float | None:
    """Nearest-rank quantile of weighted samples; None (not NaN, not 0) without samples."""
    total = sum(count for _, count in samples)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value, count in sorted(samples):
        seen += count
        if seen >= rank:
            return float(value)
    return float(max(v for v, _ in samples))


def count_above(samples: WeightedSamples, threshold: float, scale: float = 1.0) -> int:
    """Requests at or above `threshold` (after dividing by `scale`)."""
    return sum(count for value, count in samples if value / scale >= threshold)


def _pooled_quantile(challenger: WeightedSamples, champion: WeightedSamples, ratio: float,
                     q: float) -> float:
    pooled = tuple((v / ratio, c) for v, c in challenger) + tuple(champion)
    value = quantile(pooled, q)
    return 0.0 if value is None else value


def step_evidence(policy: RolloutPolicy, challenger: VersionHealth,
                  champion: VersionHealth) -> StepEvidence:
    """The step's counts: errors, and latencies at or above thresholds that are symmetric
    functions of the pooled (challenger / ratio, champion) latencies (so that, when the two are
    alike, which version a request above the threshold came from is a fair draw)."""
    errors = RatioSegment(challenger.requests, champion.requests, challenger.errors,
                          champion.errors)
    c_lat, b_lat = challenger.latencies_ms, champion.latencies_ms
    if not (c_lat and b_lat):
        empty = RatioSegment(0, 0, 0, 0)
        return StepEvidence(errors, empty, empty)
    ratio = policy.max_p99_latency_ratio
    n_c, n_b = sum(c for _, c in c_lat), sum(c for _, c in b_lat)
    segments = []
    for q in (0.5, 0.99):
        threshold = _pooled_quantile(c_lat, b_lat, ratio, q)
        segments.append(RatioSegment(n_c, n_b, count_above(c_lat, threshold, ratio),
                                     count_above(b_lat, threshold)))
    champion_p99 = quantile(b_lat, 0.99) or 0.0
    over = sum(count for value, count in c_lat if value > champion_p99 * ratio)
    return StepEvidence(errors, segments[0], segments[1], over, n_c)


def judge(policy: RolloutPolicy, window: Window, *, now: float, measure_from: float | None,
          extensions: int, step_percent: int,
          earlier_steps: tuple[dict[str, Any], ...] = ()) -> Verdict:
    """One look at a canary step; `earlier_steps`: the StepEvidence of the steps done."""
    if not window.ready:
        return Verdict(Action.HOLD, f"endpoint not ready ({window.detail or 'updating'}): "
                                    "nothing is measured until it is")
    if measure_from is None:
        return Verdict(Action.HOLD, "traffic change not applied yet: nothing is measured")
    bake_deadline = measure_from + policy.min_bake_seconds * (
        1 + min(extensions, policy.max_extensions))
    if now < measure_from:
        return Verdict(Action.HOLD, f"warming up after the config change: measuring from "
                                    f"{measure_from - now:.0f}s from now",
                       time_to_decision_seconds=bake_deadline - now)
    figures = _figures(window)
    challenger, champion = window.challenger, window.champion
    if challenger is None or champion is None or not challenger.requests or not champion.requests:
        return _no_traffic_verdict(challenger, figures, step_percent)
    current = step_evidence(policy, challenger, champion)
    look = _Look(policy, step_percent, challenger, champion, figures,
                 (*(StepEvidence.from_dict(s) for s in earlier_steps), current))
    figures.update(look.bounds())
    ttd = look.time_to_decision(now, window.start, bake_deadline)
    if ttd is not None:
        figures["time_to_decision_s"] = ttd
    step = current.as_dict()
    worse = [t for t in look.tests if t.significant]
    full = (now >= bake_deadline and challenger.requests >= policy.min_requests_per_step
            and champion.requests >= policy.min_requests_per_step)
    if worse or full:
        figures.update(look.ratio_bounds())
    if worse:
        named = "; ".join(f"{t.name} (e={t.statistic:.3g} >= {1 / t.alpha:.3g})" for t in worse)
        return Verdict(Action.ROLLBACK, f"challenger shown worse at {step_percent}%: {named}",
                       figures, look.tests, looked=True, step=step)
    shifted = prediction_shift(policy, window.predictions, policy.min_requests_per_step)
    if shifted:
        return Verdict(Action.ROLLBACK, f"challenger's predictions unlike the champion's at "
                                        f"{step_percent}%: {shifted}", figures, look.tests,
                       looked=True, step=step)
    if not full:
        return _gathering_verdict(look, now, bake_deadline, ttd, step)
    return _full_evidence_verdict(look, extensions, ttd, step)


def _figures(window: Window) -> dict[str, float]:
    figures: dict[str, float] = {"window_seconds": max(0.0, window.end - window.start)}
    if window.predictions is not None:
        figures.update(window.predictions.figures())
    for role, health in (("challenger", window.challenger), ("champion", window.champion)):
        if health is None:
            continue
        figures[f"{role}_requests"] = float(health.requests)
        figures[f"{role}_errors"] = float(health.errors)
        if health.error_rate is not None:
            figures[f"{role}_error_rate"] = health.error_rate
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            value = quantile(health.latencies_ms, q)
            if value is not None:
                figures[f"{role}_{name}_ms"] = value
    if figures.get("champion_p99_ms") and "challenger_p99_ms" in figures:
        figures["p99_ratio"] = figures["challenger_p99_ms"] / figures["champion_p99_ms"]
    return figures


@dataclass(frozen=True)
class _Look:
    """One look at a step with traffic on both versions: the evidence of every step so far."""

    policy: RolloutPolicy
    step_percent: int
    challenger: VersionHealth
    champion: VersionHealth
    figures: dict[str, float]
    steps: tuple[StepEvidence, ...]
    tests: tuple[TestResult, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "tests", self._rollback_tests())

    @property
    def rollback_alpha(self) -> float:
        return self.policy.alpha / ROLLBACK_TESTS

    @property
    def promote_alpha(self) -> float:
        return self.policy.alpha / 2

    def _totals(self) -> tuple[int, int, int, int]:
        """Challenger requests and errors, champion requests and errors, over all steps."""
        segments = [s.errors for s in self.steps]
        return (sum(s.challenger_requests for s in segments),
                sum(s.challenger_events for s in segments),
                sum(s.champion_requests for s in segments),
                sum(s.champion_events for s in segments))

    def _rollback_tests(self) -> tuple[TestResult, ...]:
        alpha, ratio, cap = self.rollback_alpha, self.policy.max_p99_latency_ratio, \
            self.policy.max_error_rate
        tolerance = self.policy.rollback_error_ratio
        tests = [e_test(f"errors: challenger error rate > {tolerance:g} x champion's",
                        evidence.worse_evidence(tuple(s.errors for s in self.steps), tolerance),
                        alpha),
                 self._sla_test(cap, alpha)]
        if any(s.latency_requests for s in self.steps):
            tests.append(e_test(f"latency: challenger latency / {ratio:g} above the pooled median "
                                f"more often than champion's",
                                evidence.worse_evidence(tuple(s.slow for s in self.steps)), alpha))
            tests.append(e_test(f"tail: challenger latency / {ratio:g} above the pooled p99 "
                                f"more often than champion's",
                                evidence.worse_evidence(tuple(s.tail for s in self.steps)), alpha))
        return tuple(tests)

    def _sla_test(self, cap: float, alpha: float) -> TestResult:
        c_req, c_err, b_req, b_err = self._totals()
        name = f"error SLA: challenger error rate > {cap:g}"
        if cap <= 0:
            return e_test(name, math.inf if c_err else 1.0, alpha)
        champion_over = evidence.rate_bounds(b_err, b_req, alpha).lower > cap
        if champion_over:
            return e_test(f"{name} (not judged: the champion's is shown above it too)", 1.0,
                          alpha)
        if c_err / max(c_req, 1) <= cap:
            return e_test(name, 1.0, alpha)
        return e_test(name, math.exp(min(700.0, evidence.rate_log_evalue(c_err, c_req, cap))),
                      alpha)

    @property
    def exposure_factor(self) -> float:
        """100 / the next step's percent: the margins at a step are those of promotion scaled
        up by it, so what the next step could cost on all traffic stays within them."""
        steps = self.policy.steps
        later = [p for p in steps if p > self.step_percent]
        return 100 / (later[0] if later else 100)

    def error_limit(self) -> float:
        """The challenger's error rate allowed: the champion's plus the (scaled) margin."""
        _, _, b_req, b_err = self._totals()
        champion_rate = b_err / b_req if b_req else 0.0
        policy = self.policy
        return champion_rate + self.exposure_factor * max(
            policy.error_margin_absolute, policy.error_margin_relative * champion_rate)

    def tail_limit(self) -> float:
        return min(1.0, self.policy.latency_tail_share * self.exposure_factor)

    def bounds(self) -> dict[str, float]:
        c_req, c_err, _, _ = self._totals()
        alpha = self.promote_alpha
        errors = evidence.rate_bounds(c_err, c_req, alpha)
        over, latency_requests = (sum(s.over_p99 for s in self.steps),
                                  sum(s.latency_requests for s in self.steps))
        figures = {"evidence_challenger_requests": float(c_req),
                   "error_rate_lower": errors.lower, "error_rate_upper": errors.upper,
                   "error_rate_limit": self.error_limit(),
                   "e_threshold_rollback": 1 / self.rollback_alpha}
        if latency_requests:
            figures["over_p99_share_upper"] = evidence.rate_bounds(
                over, latency_requests, alpha).upper
        for test in self.tests:
            figures[f"e_{test.name.split(':')[0].replace(' ', '_')}"] = test.statistic
        return figures

    def ratio_bounds(self) -> dict[str, float]:
        """The error-rate ratio's confidence sequence (for decisions: it takes a while)."""
        ratio = evidence.ratio_bounds(tuple(s.errors for s in self.steps), self.rollback_alpha)
        figures = {"error_ratio_lower": ratio.lower}
        if math.isfinite(ratio.upper):
            figures["error_ratio_upper"] = ratio.upper
        return figures

    def shortfalls(self) -> list[str]:
        """What is not shown yet for promotion (empty: shown no worse)."""
        figures, missing = self.figures, []
        if figures["error_rate_upper"] > figures["error_rate_limit"]:
            missing.append(f"error rate upper bound {figures['error_rate_upper']:.4f} > "
                           f"{figures['error_rate_limit']:.4f} (champion's + margin)")
        over = figures.get("over_p99_share_upper")
        if over is None:
            missing.append("no latency figures for both versions")
        elif over > self.tail_limit():
            missing.append(f"share slower than {self.policy.max_p99_latency_ratio:g} x the "
                           f"champion's p99: upper bound {over:.4f} > {self.tail_limit():g}")
        return missing

    def time_to_decision(self, now: float, start: float, bake_deadline: float) -> float | None:
        """Seconds until the evidence could show the challenger no worse, at the observed
        traffic and rates (None without a rate to go by)."""
        elapsed = now - start
        if elapsed <= 0 or not self.challenger.requests:
            return None
        policy = self.policy
        per_second = self.challenger.requests / elapsed
        c_req, c_err, _, _ = self._totals()
        waits = [max(0.0, bake_deadline - now)]
        for health in (self.challenger, self.champion):
            missing = policy.min_requests_per_step - health.requests
            if missing > 0:
                waits.append(missing / (health.requests / elapsed))
        needed = evidence.trials_to_bound(c_err / c_req, self.error_limit(), self.promote_alpha)
        latency_requests = sum(s.latency_requests for s in self.steps)
        if latency_requests:
            over = sum(s.over_p99 for s in self.steps) / latency_requests
            tail = evidence.trials_to_bound(over, self.tail_limit(), self.promote_alpha)
            needed = max(needed, tail * c_req / latency_requests)
        if not math.isfinite(needed):
            return None
        waits.append(max(0.0, needed - c_req) / per_second)
        return max(waits)

    def e_values(self) -> str:
        return ", ".join(f"e={t.statistic:.3g}" for t in self.tests)


def _no_traffic_verdict(challenger: VersionHealth | None, figures: dict[str, float],
                        step_percent: int) -> Verdict:
    missing = "challenger" if challenger is None or not challenger.requests else "champion"
    seconds = figures["window_seconds"]
    return Verdict(Action.HOLD, f"no {missing} requests in the {seconds:.0f}s "
                                f"window at {step_percent}%: no data is not a healthy "
                                f"signal; no estimate of the time to a decision yet",
                   figures, time_to_decision_seconds=None)


def _eta(ttd: float | None) -> str:
    return (f"; about {ttd:.0f}s to a decision at the observed traffic" if ttd is not None
            else "; no estimate of the time to a decision at the observed traffic")


def _gathering_verdict(look: _Look, now: float, bake_deadline: float, ttd: float | None,
                       step: dict[str, Any]) -> Verdict:
    policy = look.policy
    needs = []
    if now < bake_deadline:
        needs.append(f"{bake_deadline - now:.0f}s more bake")
    for role, health in (("challenger", look.challenger), ("champion", look.champion)):
        if health.requests < policy.min_requests_per_step:
            needs.append(f"{policy.min_requests_per_step - health.requests} more {role} requests")
    return Verdict(Action.HOLD, f"gathering evidence at {look.step_percent}%: needs "
                                f"{', '.join(needs)}; nothing shown worse ({look.e_values()})"
                                f"{_eta(ttd)}",
                   look.figures, look.tests, ttd, looked=True, step=step)


def _full_evidence_verdict(look: _Look, extensions: int, ttd: float | None,
                           step: dict[str, Any]) -> Verdict:
    policy, percent = look.policy, look.step_percent
    missing = look.shortfalls()
    last_step = percent >= max(policy.canary_steps, default=0)
    done = Action.PROMOTE if last_step else Action.ADVANCE
    if not missing:
        return Verdict(done, f"shown no worse at {percent}%: {look.challenger.requests} "
                             f"challenger / {look.champion.requests} champion requests in the "
                             f"step, error rate upper bound "
                             f"{look.figures['error_rate_upper']:.4f} <= "
                             f"{look.figures['error_rate_limit']:.4f}, share over "
                             f"{policy.max_p99_latency_ratio:g} x champion's p99 at most "
                             f"{look.figures['over_p99_share_upper']:.4f} <= "
                             f"{look.tail_limit():g}; nothing shown worse "
                             f"({look.e_values()})",
                       look.figures, look.tests, 0.0, looked=True, full_evidence=True, step=step)
    if extensions < policy.max_extensions:
        return Verdict(Action.EXTEND, f"not shown no worse yet at {percent}%: "
                                      f"{'; '.join(missing)}; nothing shown worse "
                                      f"({look.e_values()}); baking another "
                                      f"{policy.min_bake_seconds:.0f}s "
                                      f"({extensions + 1}/{policy.max_extensions}){_eta(ttd)}",
                       look.figures, look.tests, ttd, looked=True, full_evidence=True,
                       step=step)
    if not last_step:
        return Verdict(Action.ADVANCE, f"nothing shown worse at {percent}% after "
                                       f"{policy.max_extensions} extensions "
                                       f"({look.e_values()}); advancing to gather the evidence "
                                       f"promotion needs: {'; '.join(missing)}",
                       look.figures, look.tests, ttd, looked=True, full_evidence=True,
                       step=step)
    return Verdict(Action.HOLD, f"not promoted at {percent}% after {policy.max_extensions} "
                                f"extensions: {'; '.join(missing)}; nothing shown worse "
                                f"({look.e_values()}); holding, judged at every look, until "
                                f"the evidence is in or a person decides{_eta(ttd)}",
                   look.figures, look.tests, ttd, looked=True, full_evidence=True, step=step)
