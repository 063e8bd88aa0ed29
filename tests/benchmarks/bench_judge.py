"""The canary judge on simulated rollouts (`python -m tests.benchmarks.bench_judge`). Prints
figures; asserts nothing.

Each scenario runs hundreds of seeded rollouts through the project's own state machine and judge
(tests/benchmarks/canary_sim.py: ~400 requests per 30 s tick, the default policy), and a
Flagger-style threshold judge (5 failed checks, success rate >= 99%, p99 <= 500 ms, one check a
minute) on the same scenarios and seeds. Per judge and scenario: the share promoted, rolled back
and still holding at the horizon; the median and 90th percentile time to the decision; the
median challenger requests served before it (exposure); the step decisions were taken at.

The goals (issue 17), read off the table:
- identical models at 0.1%, 1%, 5% errors: rollbacks <= alpha; at 1% (= max_error_rate) >= 99%
  promoted;
- errors 0.1% -> 0.3%: >= 90% rolled back, most at the 5% or 25% step;
- cold start (x10 latency for 180 s): 0% rolled back;
- no challenger traffic, traffic stopping: holds, and says so (stall events) within the policy's
  max_hold_seconds;
- 5 requests per tick: the judge states an estimated time to a decision from the first looks
  ("eta at 15 min": the median time to a decision, from the start, that it stated 15 min in);
- shadow step (a backend that mirrors): a challenger whose predictions differ, or that fails
  where the champion does not, is rolled back at the shadow step with zero exposure; an
  identical one passes it and is promoted as without it. The Flagger-style judge sees no
  predictions and no shadow step.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from shared.rollout.policy import RolloutPolicy
from tests.benchmarks.canary_sim import (
    Outcome,
    Runner,
    Scenario,
    Version,
    run_flagger,
    run_gatehouse,
)

HOUR = 3600.0


def scenarios() -> list[Scenario]:
    def same(rate: float) -> tuple[Version, Version]:
        return Version(error_rate=rate), Version(error_rate=rate)

    return [
        Scenario("identical, 0.1% errors", *same(0.001)),
        Scenario("identical, 1% errors", *same(0.01)),
        Scenario("identical, 5% errors", *same(0.05)),
        Scenario("errors 0.1% -> 0.3%", Version(0.001), Version(0.003)),
        Scenario("errors 1% -> 5%", Version(0.01), Version(0.05)),
        Scenario("latency x1.5", Version(0.001), Version(0.001, latency_scale=1.5)),
        Scenario("cold start x10 for 180 s", Version(0.001),
                 Version(0.001, cold_seconds=180, cold_factor=10)),
        Scenario("no challenger traffic", Version(0.001), Version(0.001),
                 challenger_gets_traffic=False, horizon_seconds=2 * HOUR, seeds=50),
        Scenario("traffic stops at 20 min", Version(0.001), Version(0.001),
                 stop_traffic_at=1200, horizon_seconds=2 * HOUR, seeds=50),
        Scenario("5 requests per tick", Version(0.001), Version(0.001), rate=5,
                 horizon_seconds=24 * HOUR, seeds=20),
        # The canary judge sees both versions' answers (the payload log), no mirroring.
        Scenario("canary: predictions shifted (logit +1), same SLAs", Version(0.001),
                 Version(0.001, score_shift=1.0), predictions=True),
        Scenario("canary: identical, predictions judged", Version(0.001), Version(0.001),
                 predictions=True),
        # A backend that mirrors: the shadow step first (no user sees the challenger's answers).
        Scenario("shadow: identical", Version(0.001), Version(0.001), mirrored=True),
        Scenario("shadow: predictions shifted (logit +1), same SLAs", Version(0.001),
                 Version(0.001, score_shift=1.0), mirrored=True),
        Scenario("shadow: predictions shifted (logit +0.3), same SLAs", Version(0.001),
                 Version(0.001, score_shift=0.3), mirrored=True),
        Scenario("shadow: errors 0.1% -> 5%", Version(0.001), Version(0.05), mirrored=True),
    ]


def _run(args: tuple[str, Scenario, int, RolloutPolicy]) -> Outcome:
    judge_name, scenario, seed, policy = args
    runner: Runner = run_gatehouse if judge_name == "gatehouse" else run_flagger
    return runner(scenario, seed, policy)


def _minutes(values: list[float], q: float) -> str:
    if not values:
        return "-"
    minutes = np.quantile(values, q) / 60
    return f"{minutes:.0f}" if minutes >= 10 else f"{minutes:.1f}"  # a shadow step: seconds


def _hours(values: list[float]) -> str:
    return f"{np.median(values) / 3600:.1f}" if values else "-"


def summary(outcomes: list[Outcome]) -> dict[str, str]:
    n = len(outcomes)
    counts = Counter(o.action for o in outcomes)
    decided = [o for o in outcomes if o.action != "hold"]
    seconds = [o.seconds for o in decided]
    steps = Counter(o.step_percent for o in outcomes if o.action == "rollback")
    at = {0: "shadow"}
    return {
        "promoted": f"{100 * counts['promote'] / n:.1f}%",
        "rolled back": f"{100 * counts['rollback'] / n:.1f}%",
        "holding": f"{100 * counts['hold'] / n:.1f}%",
        "min to decision (median/p90)": f"{_minutes(seconds, 0.5)}/{_minutes(seconds, 0.9)}",
        "exposure (median)": f"{np.median([o.exposure for o in decided]):.0f}" if decided
        else "-",
        "rollbacks at step": " ".join(f"{at.get(p, f'{p}%')}:{c}"
                                      for p, c in sorted(steps.items())) or "-",
        "eta said": f"{100 * sum(o.said_eta for o in outcomes) / n:.0f}%",
        "eta at 15 min (median h)": _hours([o.first_eta for o in outcomes
                                            if o.first_eta is not None]),
        "stall events": f"{100 * sum(o.stall_events > 0 for o in outcomes) / n:.0f}%",
    }


def print_table(rows: list[tuple[str, str, dict[str, str]]]) -> None:
    headers = ["scenario", "judge", *rows[0][2]]
    table = [headers] + [[name, judge_name, *cells.values()] for name, judge_name, cells in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    for index, row in enumerate(table):
        print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("-+-".join("-" * width for width in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=0,
                        help="seeds per scenario (default: each scenario's own, 50-200)")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--judges", default="gatehouse,flagger")
    args = parser.parse_args()
    policy = RolloutPolicy()
    print(f"default policy: steps {policy.steps}, bake {policy.min_bake_seconds:.0f}s, "
          f"min requests {policy.min_requests_per_step}, alpha {policy.alpha}, "
          f"max_error_rate {policy.max_error_rate}, p99 ratio {policy.max_p99_latency_ratio}")
    rows = []
    chosen = [s for s in scenarios() if args.only.lower() in s.name.lower()]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for scenario in chosen:
            seeds = args.seeds or scenario.seeds
            for judge_name in args.judges.split(","):
                started = time.perf_counter()
                outcomes = list(pool.map(_run, [(judge_name, scenario, seed, policy)
                                                for seed in range(seeds)], chunksize=4))
                cells = summary(outcomes)
                cells["seeds"] = str(seeds)
                cells["run s"] = f"{time.perf_counter() - started:.0f}"
                rows.append((scenario.name, judge_name, cells))
                print(f"  {scenario.name} / {judge_name}: {cells}", flush=True)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
