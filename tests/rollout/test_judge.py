"""The judge: decisions with their reasons, no data never healthy, and false alarms at or under
alpha over whole simulated rollouts of identical models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.rollout import judge as judge_module
from shared.rollout.judge import Action, Window, judge, look_alpha, quantile
from shared.rollout.policy import RolloutPolicy
from shared.serving.base import VersionHealth

POLICY = RolloutPolicy(steps=(10, 50, 100), min_bake_seconds=60, min_requests_per_step=150,
                       warmup_seconds=0, max_extensions=2, alpha=0.05, max_error_rate=0.02)


def health(version: str, latencies, errors: int) -> VersionHealth:
    values, counts = np.unique(np.round(np.asarray(latencies, dtype=float), 1),
                               return_counts=True)
    return VersionHealth(version, len(latencies), errors,
                         tuple(zip(values.tolist(), counts.tolist(), strict=True)))


def look(champion, challenger, *, now=1000.0, measure_from=0.0, extensions=0, early_looks=0,
         ready=True, policy=POLICY, percent=10):
    window = Window(ready=ready, start=measure_from, end=now, champion=champion,
                    challenger=challenger)
    return judge(policy, window, now=now, measure_from=measure_from, extensions=extensions,
                 early_looks=early_looks, step_percent=percent)


def test_quantile_is_nearest_rank_and_none_without_samples():
    assert quantile(((1.0, 98), (50.0, 2)), 0.99) == 50.0
    assert quantile(((1.0, 99), (50.0, 1)), 0.99) == 1.0
    assert quantile((), 0.99) is None


def test_not_ready_holds_and_measures_nothing():
    verdict = look(None, None, ready=False)
    assert verdict.action is Action.HOLD and "not ready" in verdict.reason
    assert verdict.tests == () and not verdict.looked


def test_warm_up_holds_with_an_estimate():
    verdict = look(None, None, now=100.0, measure_from=130.0)
    assert verdict.action is Action.HOLD and "warming up" in verdict.reason
    assert verdict.time_to_decision_seconds == pytest.approx(90.0)


def test_no_challenger_traffic_holds_and_never_reads_healthy():
    champion = health("1", [5.0] * 400, 0)
    verdict = look(champion, VersionHealth("2", 0, 0))
    assert verdict.action is Action.HOLD
    assert "no challenger requests" in verdict.reason and "not a healthy" in verdict.reason
    assert verdict.time_to_decision_seconds is None
    # An undefined rate is absent, never NaN and never 0.
    assert "challenger_error_rate" not in verdict.figures
    assert all(math.isfinite(v) for v in verdict.figures.values())


def test_too_little_data_holds_with_time_to_decision():
    rng = np.random.default_rng(3)
    champion = health("1", rng.lognormal(2, 0.4, 600), 1)
    challenger = health("2", rng.lognormal(2, 0.4, 50), 0)
    verdict = look(champion, challenger, now=30.0, measure_from=0.0)
    assert verdict.action is Action.HOLD and "gathering evidence" in verdict.reason
    assert "100 more challenger requests" in verdict.reason
    # 50 challenger requests in 30 s: 100 more take about 60 s; the bake needs 30 s more.
    assert verdict.time_to_decision_seconds == pytest.approx(60.0)
    assert verdict.looked and len(verdict.tests) == 4


def test_a_few_slow_requests_at_a_small_share_neither_kill_nor_promote():
    rng = np.random.default_rng(4)
    champion = health("1", rng.lognormal(2, 0.4, 900), 2)
    slow = list(rng.lognormal(2, 0.4, 40)) + [900.0, 1200.0]
    verdict = look(champion, health("2", slow, 0), now=20.0, measure_from=0.0)
    assert verdict.action is Action.HOLD


def test_healthy_challenger_advances_with_figures_tests_and_p_values():
    rng = np.random.default_rng(5)
    champion = health("1", rng.lognormal(2, 0.4, 2000), 4)
    challenger = health("2", rng.lognormal(2, 0.4, 300), 0)
    verdict = look(champion, challenger)
    assert verdict.action is Action.ADVANCE
    summary = verdict.summary()
    assert {t["name"].split(":")[0] for t in summary["tests"]} == {
        "fisher-exact", "exact binomial", "mann-whitney U", "fisher-exact tail"}
    assert all(0 <= t["p_value"] <= 1 and t["alpha"] > 0 for t in summary["tests"])
    for key in ("challenger_requests", "champion_requests", "challenger_error_rate", "p99_ratio",
                "alpha_look"):
        assert key in summary["figures"]


def test_last_canary_step_promotes():
    rng = np.random.default_rng(6)
    verdict = look(health("1", rng.lognormal(2, 0.4, 400), 0),
                   health("2", rng.lognormal(2, 0.4, 400), 0), percent=50)
    assert verdict.action is Action.PROMOTE


def test_error_regression_rolls_back_naming_the_test():
    rng = np.random.default_rng(7)
    verdict = look(health("1", rng.lognormal(2, 0.4, 2000), 4),
                   health("2", rng.lognormal(2, 0.4, 200), 30), now=10.0)
    assert verdict.action is Action.ROLLBACK
    assert "fisher-exact" in verdict.reason and "p=" in verdict.reason


def test_latency_regression_rolls_back():
    rng = np.random.default_rng(8)
    verdict = look(health("1", rng.lognormal(2, 0.4, 2000), 0),
                   health("2", 2 * rng.lognormal(2, 0.4, 300), 0))
    assert verdict.action is Action.ROLLBACK and "mann-whitney" in verdict.reason


def test_tail_over_the_sla_but_not_significant_extends_then_holds():
    rng = np.random.default_rng(9)
    champion = health("1", rng.lognormal(2, 0.3, 2000), 0)
    tail = list(rng.lognormal(2, 0.3, 197)) + [200.0] * 3  # 1.5% very slow: p99 way up
    challenger = health("2", tail, 0)
    first = look(champion, challenger)
    assert first.action is Action.EXTEND and "p99 ratio" in first.reason
    assert not any(t.significant for t in first.tests)
    done = look(champion, challenger, extensions=POLICY.max_extensions + 1,
                now=60 * (POLICY.max_extensions + 1) + 1)
    assert done.action is Action.HOLD and "after 2 extensions" in done.reason
    assert done.looked and done.time_to_decision_seconds is None


def test_a_significant_tail_rolls_back():
    rng = np.random.default_rng(10)
    champion = health("1", rng.lognormal(2, 0.3, 5000), 0)
    tail = list(rng.lognormal(2, 0.3, 1900)) + [200.0] * 100  # 5% very slow
    verdict = look(champion, health("2", tail, 0))
    assert verdict.action is Action.ROLLBACK and "tail" in verdict.reason


def test_alpha_spending_sums_to_alpha():
    early = sum(look_alpha(POLICY, False, i) for i in range(1, 200_000))
    full = look_alpha(POLICY, True, 1) * POLICY.decision_looks
    assert early < POLICY.alpha / 2 and early == pytest.approx(POLICY.alpha / 2, rel=1e-4)
    assert full == pytest.approx(POLICY.alpha / 2)


# ---- whole rollouts, simulated ----

def simulate(seed: int, *, error_rate=(0.005, 0.005), latency_scale=1.0, policy=POLICY,
             requests_per_tick=200, tick=30.0, max_ticks=60) -> Action:
    """A rollout of one challenger against its champion, judged every tick; how it ended."""
    rng = np.random.default_rng(seed)
    step, extensions, early_looks, step_start, now = 0, 0, 0, 0.0, 0.0
    data = {"1": ([], 0), "2": ([], 0)}
    for _ in range(max_ticks):
        now += tick
        percent = policy.canary_steps[step]
        n_challenger = rng.binomial(requests_per_tick, percent / 100)
        for version, n, rate, scale in (("1", requests_per_tick - n_challenger, error_rate[0], 1.0),
                                        ("2", n_challenger, error_rate[1], latency_scale)):
            latencies, errors = data[version]
            latencies.extend(scale * rng.lognormal(2.0, 0.5, n))
            data[version] = (latencies, errors + int(rng.binomial(n, rate)))
        verdict = look(health("1", *data["1"]), health("2", *data["2"]), now=now,
                       measure_from=step_start, extensions=extensions, early_looks=early_looks,
                       policy=policy, percent=percent)
        if verdict.action in (Action.ROLLBACK, Action.PROMOTE):
            return verdict.action
        if verdict.action is Action.EXTEND:
            extensions += 1
        elif verdict.action is Action.ADVANCE:
            step, extensions, step_start = step + 1, 0, now
            data = {"1": ([], 0), "2": ([], 0)}
        elif verdict.looked:
            early_looks += 1
    return Action.HOLD


def test_false_alarms_on_identical_models_stay_at_or_under_alpha():
    seeds = 150
    rollbacks = sum(simulate(seed) is Action.ROLLBACK for seed in range(seeds))
    assert rollbacks / seeds <= POLICY.alpha, f"{rollbacks}/{seeds} identical models rolled back"


def test_the_simulation_would_see_inflated_false_alarms(monkeypatch):
    """Spending the full alpha at every look (no alpha spending) does exceed the nominal rate,
    so the test above can tell a sound judge from an unsound one."""
    monkeypatch.setattr(judge_module, "look_alpha", lambda policy, full, n: 0.5)
    seeds = 40
    rollbacks = sum(simulate(seed) is Action.ROLLBACK for seed in range(seeds))
    assert rollbacks / seeds > POLICY.alpha


def test_simulated_regressions_are_rolled_back_and_good_models_promoted():
    assert all(simulate(s, error_rate=(0.005, 0.08)) is Action.ROLLBACK for s in range(10))
    assert all(simulate(s, latency_scale=2.0) is Action.ROLLBACK for s in range(10))
    promoted = sum(simulate(s, latency_scale=1.02) is Action.PROMOTE for s in range(20))
    assert promoted >= 18
