"""The canary judge (pure): challenger against champion on the same window, with tests that
control false alarms.

Tests, each one-sided ("the challenger is worse"):
- Fisher's exact test on the two error proportions (challenger > champion);
- an exact binomial test of the challenger's error rate against the SLA's `max_error_rate`;
- a Mann-Whitney U rank test of challenger latencies divided by `max_p99_latency_ratio`
  against champion latencies: significant only when the challenger is slower than the
  tolerated factor, not for any small slowdown;
- a tail test: Fisher's exact test on how many requests of each lie above the pooled p99 of
  (challenger latencies / ratio) and champion latencies. The threshold is a symmetric function
  of the pooled data, so under "no worse than allowed" this is an exact permutation test.

False alarms: the judge looks at accumulating data many times, so alpha is spent, not reused
(Bonferroni). Half of `alpha` goes to early looks (before a step has its minimum bake and
requests, and any after a step used its extensions), look i getting (alpha/2)·6/(π²i²) - a
series that sums to alpha/2; the other half is split evenly over the rollout's budgeted
full-evidence looks (steps × (1 + extensions)). Within a look, the share is split over the tests
run. A rollback only ever follows a significant test, so the chance of rolling back a challenger
no worse than its champion stays at or under `alpha` for the whole rollout.

Decisions: HOLD (not ready, warming up, no or too little data - none of which reads as
healthy), ROLLBACK (a test is significant), and at a full-evidence look: ADVANCE/PROMOTE when
the challenger's error rate and p99 ratio are within the SLA, EXTEND when they are not but no
test is significant (a few slow requests kill nothing by chance). Once a step's extensions are
used up it holds, still judging every look, until the evidence is conclusive either way or a
person rolls back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from shared.rollout.policy import RolloutPolicy
from shared.serving.base import VersionHealth, WeightedSamples

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray


class Action(str, Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    EXTEND = "extend"


@dataclass(frozen=True)
class TestResult:
    name: str
    statistic: float
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value <= self.alpha

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statistic": self.statistic, "p_value": self.p_value,
                "alpha": self.alpha, "significant": self.significant}


@dataclass(frozen=True)
class Window:
    """What the shell measured for one look."""

    ready: bool
    start: float            # measurement window start (after warm-up), epoch seconds
    end: float
    champion: VersionHealth | None
    challenger: VersionHealth | None
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str
    figures: dict[str, float] = field(default_factory=dict)
    tests: tuple[TestResult, ...] = ()
    time_to_decision_seconds: float | None = None
    looked: bool = False        # tests were run (an alpha share was spent)
    full_evidence: bool = False

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


def _expand(samples: WeightedSamples, scale: float = 1.0) -> NDArray[np.float64]:
    import numpy as np

    values = np.array([v for v, _ in samples], dtype=float) / scale
    counts = np.array([c for _, c in samples], dtype=int)
    return np.repeat(values, counts)


def error_rate_test(challenger: VersionHealth, champion: VersionHealth, alpha: float) -> TestResult:
    from scipy.stats import fisher_exact

    table = [[challenger.errors, challenger.requests - challenger.errors],
             [champion.errors, champion.requests - champion.errors]]
    odds, p_value = fisher_exact(table, alternative="greater")
    statistic = float(odds) if math.isfinite(odds) else 1e308
    return TestResult("fisher-exact: challenger error rate > champion's", statistic,
                      float(p_value), alpha)


def error_sla_test(challenger: VersionHealth, max_error_rate: float, alpha: float) -> TestResult:
    from scipy.stats import binomtest

    if max_error_rate <= 0:
        p_value = 0.0 if challenger.errors else 1.0
    else:
        p_value = binomtest(challenger.errors, challenger.requests, max_error_rate,
                            alternative="greater").pvalue
    return TestResult(f"exact binomial: challenger error rate > SLA {max_error_rate:g}",
                      float(challenger.errors), float(p_value), alpha)


def latency_test(challenger: WeightedSamples, champion: WeightedSamples, ratio: float,
                 alpha: float) -> TestResult:
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(_expand(challenger, ratio), _expand(champion), alternative="greater",
                          method="asymptotic")
    return TestResult(f"mann-whitney U: challenger latency / {ratio:g} > champion latency",
                      float(result.statistic), float(result.pvalue), alpha)


def tail_test(challenger: WeightedSamples, champion: WeightedSamples, ratio: float,
              alpha: float) -> TestResult:
    import numpy as np
    from scipy.stats import fisher_exact

    scaled, base = _expand(challenger, ratio), _expand(champion)
    threshold = float(np.quantile(np.concatenate([scaled, base]), 0.99, method="inverted_cdf"))
    above_c, above_b = int((scaled >= threshold).sum()), int((base >= threshold).sum())
    _, p_value = fisher_exact([[above_c, len(scaled) - above_c], [above_b, len(base) - above_b]],
                              alternative="greater")
    return TestResult(f"fisher-exact tail: challenger latency / {ratio:g} at or above the pooled "
                      f"p99 ({threshold:.1f} ms) more often than champion's", float(above_c),
                      float(p_value), alpha)


def look_alpha(policy: RolloutPolicy, full_evidence: bool, early_look_number: int) -> float:
    if full_evidence:
        return policy.alpha / 2 / policy.decision_looks
    return policy.alpha / 2 * 6 / (math.pi ** 2 * max(1, early_look_number) ** 2)


def _figures(window: Window) -> dict[str, float]:
    figures: dict[str, float] = {"window_seconds": max(0.0, window.end - window.start)}
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


def _time_to_decision(window: Window, policy: RolloutPolicy, bake_deadline: float,
                      now: float) -> float | None:
    """Seconds until a full-evidence look at the observed request rates; None without traffic."""
    elapsed = now - window.start
    waits = [max(0.0, bake_deadline - now)]
    for health in (window.challenger, window.champion):
        count = health.requests if health else 0
        missing = policy.min_requests_per_step - count
        if missing <= 0:
            continue
        if count == 0 or elapsed <= 0:
            return None
        waits.append(missing / (count / elapsed))
    return max(waits)


def judge(policy: RolloutPolicy, window: Window, *, now: float, measure_from: float | None,
          extensions: int, early_looks: int, step_percent: int) -> Verdict:
    """One look at a canary step."""
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
    ttd = _time_to_decision(window, policy, bake_deadline, now)
    if ttd is not None:
        figures["time_to_decision_s"] = ttd
    challenger, champion = window.challenger, window.champion
    if challenger is None or champion is None or not challenger.requests or not champion.requests:
        return _no_traffic_verdict(challenger, figures, step_percent)
    full = (now >= bake_deadline and challenger.requests >= policy.min_requests_per_step
            and champion.requests >= policy.min_requests_per_step)
    per_look = look_alpha(policy, full and extensions <= policy.max_extensions, early_looks + 1)
    figures["alpha_look"] = per_look
    look = _Look(policy, step_percent, challenger, champion, figures,
                 _tests(policy, challenger, champion, per_look))
    significant = [t for t in look.tests if t.significant]
    if significant:
        named = "; ".join(f"{t.name} (p={t.p_value:.3g} <= {t.alpha:.3g})" for t in significant)
        return Verdict(Action.ROLLBACK,
                       f"challenger worse than allowed at {step_percent}%: {named}",
                       figures, look.tests, looked=True, full_evidence=full)
    if not full:
        return _gathering_verdict(look, now, bake_deadline, ttd)
    return _full_evidence_verdict(look, extensions)


@dataclass(frozen=True)
class _Look:
    """What one look at a step with traffic on both versions measured and tested."""

    policy: RolloutPolicy
    step_percent: int
    challenger: VersionHealth
    champion: VersionHealth
    figures: dict[str, float]
    tests: tuple[TestResult, ...]

    def p_values(self) -> str:
        return ", ".join(f"p={t.p_value:.3g}" for t in self.tests)


def _no_traffic_verdict(challenger: VersionHealth | None, figures: dict[str, float],
                        step_percent: int) -> Verdict:
    missing = "challenger" if challenger is None or not challenger.requests else "champion"
    seconds = figures["window_seconds"]
    return Verdict(Action.HOLD, f"no {missing} requests in the {seconds:.0f}s "
                                f"window at {step_percent}%: no data is not a healthy "
                                f"signal; no estimate of the time to a decision yet",
                   figures, time_to_decision_seconds=None)


def _tests(policy: RolloutPolicy, challenger: VersionHealth, champion: VersionHealth,
           per_look: float) -> tuple[TestResult, ...]:
    """The look's alpha share split evenly over the tests the data allows."""
    have_latency = bool(challenger.latencies_ms and champion.latencies_ms)
    per_test = per_look / (4 if have_latency else 2)
    tests = [error_rate_test(challenger, champion, per_test),
             error_sla_test(challenger, policy.max_error_rate, per_test)]
    if have_latency:
        for test in (latency_test, tail_test):
            tests.append(test(challenger.latencies_ms, champion.latencies_ms,
                              policy.max_p99_latency_ratio, per_test))
    return tuple(tests)


def _gathering_verdict(look: _Look, now: float, bake_deadline: float,
                       ttd: float | None) -> Verdict:
    policy = look.policy
    needs = []
    if now < bake_deadline:
        needs.append(f"{bake_deadline - now:.0f}s more bake")
    for role, health in (("challenger", look.challenger), ("champion", look.champion)):
        if health.requests < policy.min_requests_per_step:
            needs.append(f"{policy.min_requests_per_step - health.requests} more {role} requests")
    eta = f"; about {ttd:.0f}s to a decision" if ttd is not None else ""
    return Verdict(Action.HOLD, f"gathering evidence at {look.step_percent}%: needs "
                                f"{', '.join(needs)}; no significant harm so far{eta}",
                   look.figures, look.tests, ttd, looked=True)


def _outside_sla(look: _Look) -> list[str]:
    """How the challenger's error rate and p99 ratio miss the SLA (empty: within it)."""
    policy = look.policy
    outside = []
    error_rate = look.challenger.error_rate
    if error_rate is not None and error_rate > policy.max_error_rate:
        outside.append(f"error rate {error_rate:.4f} > {policy.max_error_rate:g}")
    ratio = look.figures.get("p99_ratio")
    if ratio is None:
        outside.append("no latency figures for both versions")
    elif ratio > policy.max_p99_latency_ratio:
        outside.append(f"p99 ratio {ratio:.2f} > {policy.max_p99_latency_ratio:g}")
    return outside


def _full_evidence_verdict(look: _Look, extensions: int) -> Verdict:
    policy, step_percent = look.policy, look.step_percent
    outside = _outside_sla(look)
    if not outside:
        return _healthy_verdict(look)
    if extensions <= policy.max_extensions:
        more = ("baking another " if extensions < policy.max_extensions else
                "extensions used up after this: holding, judged at every look, for another ")
        return Verdict(Action.EXTEND, f"inconclusive at {step_percent}%: {'; '.join(outside)} "
                                      f"but no test significant ({look.p_values()}); {more}"
                                      f"{policy.min_bake_seconds:.0f}s "
                                      f"({extensions + 1}/{policy.max_extensions + 1})",
                       look.figures, look.tests, policy.min_bake_seconds, looked=True,
                       full_evidence=True)
    return Verdict(Action.HOLD, f"still inconclusive at {step_percent}% after "
                                f"{policy.max_extensions} extensions: {'; '.join(outside)}, "
                                f"no test significant ({look.p_values()}); holding until the "
                                f"evidence is conclusive or a person rolls back",
                   look.figures, look.tests, None, looked=True, full_evidence=True)


def _healthy_verdict(look: _Look) -> Verdict:
    step_percent, figures = look.step_percent, look.figures
    last_step = step_percent >= max(look.policy.canary_steps, default=0)
    return Verdict(Action.PROMOTE if last_step else Action.ADVANCE,
                   f"healthy at {step_percent}% over {figures['window_seconds']:.0f}s: "
                   f"{look.challenger.requests} challenger / {look.champion.requests} champion "
                   f"requests, error rate {look.challenger.error_rate:.4f}, p99 ratio "
                   f"{figures['p99_ratio']:.2f}; no test significant ({look.p_values()})",
                   figures, look.tests, 0.0, looked=True, full_evidence=True)
