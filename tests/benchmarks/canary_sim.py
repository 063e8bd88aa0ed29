"""Simulated canary rollouts (pure, no storage, no servers): the project's own state machine and
judge driven tick by tick over traffic drawn from known champion and challenger distributions,
and a Flagger-style threshold judge run on the same scenarios and seeds.

Traffic: Poisson(`rate`) requests per 30 s tick, each routed to the challenger with its route's
share; latencies lognormal (median 60 ms, sigma 0.5: p99 about 190 ms), rounded to the
millisecond; errors Bernoulli per request. The backend applies a traffic config at once.

A scenario on a backend that mirrors (`mirrored`) starts with the shadow step: every request the
champion serves is scored by the challenger too. Each request's answer is P(positive), the
champion's logit drawn N(-1, 1.5), the challenger's that logit plus its `score_shift`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from shared.rollout import machine
from shared.rollout.judge import Window, judge
from shared.rollout.machine import ApplyTraffic, EndpointRecord, MirrorTraffic, Phase
from shared.rollout.policy import RolloutPolicy
from shared.rollout.quality import PredictionComparison, compare_predictions
from shared.rollout.shadow import judge_shadow
from shared.rollout.warmup import sample_from
from shared.serving.base import VersionHealth

TICK = 30.0
MEDIAN_MS, SIGMA = 60.0, 0.5
MAX_MS = 60_000
CHAMPION, CHALLENGER = "1", "2"
SCORE_LOGIT_MEAN, SCORE_LOGIT_SD = -1.0, 1.5


@dataclass(frozen=True)
class Version:
    error_rate: float = 0.01
    latency_scale: float = 1.0
    cold_seconds: float = 0.0        # slower by cold_factor for this long after it first serves
    cold_factor: float = 1.0
    score_shift: float = 0.0         # added to the champion's logit of each request's answer


@dataclass(frozen=True)
class Scenario:
    name: str
    champion: Version
    challenger: Version
    rate: float = 400.0                         # requests per tick
    stop_traffic_at: float | None = None        # all traffic stops then (seconds)
    challenger_gets_traffic: bool = True
    horizon_seconds: float = 4 * 3600.0
    seeds: int = 200
    mirrored: bool = False                      # the backend mirrors: a shadow step first
    predictions: bool = False                   # the canary judge sees both versions' answers


@dataclass(frozen=True)
class Outcome:
    action: str                     # "promote", "rollback" or "hold" (still running at the end)
    seconds: float                  # from the canary's start to the decision (or the horizon)
    exposure: int                   # challenger requests served before it
    step_percent: int               # the traffic share when it was decided
    said_eta: bool = False          # the judge gave an estimated time to a decision early on
    stall_events: int = 0
    first_eta: float | None = None  # the time to a decision it stated at 15 min (from the start)


@dataclass
class Served:
    """One version's requests, cumulative from a start time (a latency histogram in ms)."""

    since: float = 0.0
    requests: int = 0
    errors: int = 0
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(MAX_MS + 1, dtype=np.int64))

    def health(self, version: str) -> VersionHealth:
        values = np.flatnonzero(self.histogram)
        samples = tuple(zip(values.astype(float).tolist(), self.histogram[values].tolist(),
                            strict=True))
        return VersionHealth(version, self.requests, self.errors, samples)


class Traffic:
    """The scenario's requests, tick by tick, for whatever routes the endpoint serves."""

    def __init__(self, scenario: Scenario, seed: int):
        self.scenario = scenario
        self.rng = np.random.default_rng(seed)
        self.first_served: dict[str, float] = {}
        self.exposure = 0

    def tick(self, end: float, routes: dict[str, int]) -> dict[str, tuple[int, int, np.ndarray]]:
        """What each version served in the tick ending at `end`: (requests, errors, latencies)."""
        scenario, rng = self.scenario, self.rng
        stopped = scenario.stop_traffic_at is not None and end > scenario.stop_traffic_at
        total = 0 if stopped else int(rng.poisson(scenario.rate))
        share = routes.get(CHALLENGER, 0) / 100 if scenario.challenger_gets_traffic else 0.0
        n_challenger = int(rng.binomial(total, share))
        served = {}
        for version, n, spec in ((CHAMPION, total - n_challenger, scenario.champion),
                                 (CHALLENGER, n_challenger, scenario.challenger)):
            if n and version not in self.first_served:
                self.first_served[version] = end - TICK
            scale = spec.latency_scale
            if spec.cold_seconds and end - TICK < self.first_served.get(version, end) \
                    + spec.cold_seconds:
                scale *= spec.cold_factor
            latencies = np.minimum(np.rint(scale * rng.lognormal(np.log(MEDIAN_MS), SIGMA, n)),
                                   MAX_MS).astype(np.int64)
            served[version] = (n, int(rng.binomial(n, spec.error_rate)), latencies)
        self.exposure += n_challenger
        return served


class Measured:
    """Per-version figures since a start time, as the embedded backend's health reports them."""

    def __init__(self) -> None:
        self.ticks: list[tuple[float, dict[str, tuple[int, int, np.ndarray]]]] = []
        self.versions: dict[str, Served] = {}

    def add(self, end: float, served: dict[str, tuple[int, int, np.ndarray]]) -> None:
        self.ticks.append((end, served))
        for version, cumulative in self.versions.items():
            self._fold(cumulative, end, served.get(version))

    @staticmethod
    def _fold(cumulative: Served, end: float, figures) -> None:
        if figures is None or end - TICK < cumulative.since - 1e-9:
            return
        n, errors, latencies = figures
        cumulative.requests += n
        cumulative.errors += errors
        np.add.at(cumulative.histogram, latencies, 1)

    def since(self, version: str, start: float) -> VersionHealth:
        cumulative = self.versions.get(version)
        if cumulative is None or cumulative.since != start:
            cumulative = self.versions[version] = Served(since=start)
            for end, served in self.ticks:
                self._fold(cumulative, end, served.get(version))
        return cumulative.health(version)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


@lru_cache(maxsize=1)
def _score_reference():
    """The champion's monitoring reference of its answers (the PSI bins)."""
    from shared.monitoring.reference import numeric_reference

    rng = np.random.default_rng(20261130)
    return numeric_reference(_sigmoid(rng.normal(SCORE_LOGIT_MEAN, SCORE_LOGIT_SD, 20_000)))


class Mirrored:
    """The shadow step's requests: both versions' answer to each."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.champion: list[np.ndarray] = []
        self.challenger: list[np.ndarray] = []
        self.requests = self.disagreements = self.paired = 0
        self.challenger_failures = self.champion_failures = 0

    def add(self, rng: np.random.Generator, requests: int) -> None:
        logits = rng.normal(SCORE_LOGIT_MEAN, SCORE_LOGIT_SD, requests)
        champion = _sigmoid(logits)
        challenger = _sigmoid(logits + self.scenario.challenger.score_shift)
        champion_failed = rng.random(requests) < self.scenario.champion.error_rate
        challenger_failed = rng.random(requests) < self.scenario.challenger.error_rate
        answered = ~champion_failed & ~challenger_failed
        self.champion.append(champion[~champion_failed])
        self.challenger.append(challenger[~challenger_failed])
        self.disagreements += int(((champion >= 0.5) != (challenger >= 0.5))[answered].sum())
        self.paired += int(answered.sum())
        self.challenger_failures += int((challenger_failed & ~champion_failed).sum())
        self.champion_failures += int((champion_failed & ~challenger_failed).sum())
        self.requests += requests

    def comparison(self) -> PredictionComparison | None:
        if not self.paired:
            return None
        scored = compare_predictions(_score_reference(), np.concatenate(self.challenger),
                                     np.concatenate(self.champion))
        return replace(scored, paired=self.paired, disagreements=self.disagreements,
                       disagreement_rate=self.disagreements / self.paired,
                       mirrored_requests=self.requests,
                       challenger_failures=self.challenger_failures,
                       champion_failures=self.champion_failures)


class Answers:
    """Each version's answers to the requests it served, per tick (the canary's payload log)."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.ticks: list[tuple[float, np.ndarray, np.ndarray]] = []

    def add(self, rng: np.random.Generator, end: float, served) -> None:
        answers = []
        for version, spec in ((CHAMPION, self.scenario.champion),
                              (CHALLENGER, self.scenario.challenger)):
            n = served[version][0] if version in served else 0
            answers.append(_sigmoid(rng.normal(SCORE_LOGIT_MEAN, SCORE_LOGIT_SD, n)
                                    + spec.score_shift))
        self.ticks.append((end, answers[0], answers[1]))

    def since(self, start: float) -> PredictionComparison | None:
        kept = [(b, c) for end, b, c in self.ticks if end - TICK >= start - 1e-9]
        champion = np.concatenate([b for b, _ in kept]) if kept else np.empty(0)
        challenger = np.concatenate([c for _, c in kept]) if kept else np.empty(0)
        if not len(champion) or not len(challenger):
            return None
        return compare_predictions(_score_reference(), challenger, champion)


def _stalls(step: machine.Step) -> int:
    return sum(t.action == "stalled" for t in step.transitions)


def _settle(step: machine.Step, now: float, policy: RolloutPolicy) -> EndpointRecord:
    """The shell's drain: every effect carried out at once (traffic applied immediately)."""
    record = step.record
    for effect in step.effects:
        record = machine.drop_effect(record, effect)
        if isinstance(effect, ApplyTraffic):
            record = machine.traffic_applied(record, effect.routes, config_updated_at=now,
                                             warmup_seconds=policy.warmup_seconds, now=now)
        elif isinstance(effect, MirrorTraffic):
            record = machine.mirror_applied(record, effect.version, now=now)
    return record


def _warm_up(record: EndpointRecord, measured: Measured, policy: RolloutPolicy,
             now: float) -> EndpointRecord:
    """A warm-up look, as the service takes it: both versions since the previous look."""
    active = record.active
    assert active is not None and active.applied_at is not None
    samples = (active.warmup or {}).get("samples") or []
    since = samples[-1][0] if samples else active.applied_at
    sample = sample_from(now, measured.since(CHALLENGER, since), measured.since(CHAMPION, since))
    return machine.warming(record, sample=sample, policy=policy, now=now)


def run_gatehouse(scenario: Scenario, seed: int, policy: RolloutPolicy) -> Outcome:
    traffic, measured = Traffic(scenario, seed), Measured()
    record = machine.start(None, model_name="m", endpoint="m", version=CHALLENGER,
                           champion=CHAMPION, policy=policy, now=0.0, actor="bench",
                           reason="gates passed").record
    shadow = scenario.mirrored and policy.shadow_step
    record = _settle(machine.begin(record, policy=policy, replay_ok=True, replay_detail="",
                                   now=0.0, shadow=shadow), 0.0, policy)
    now, said_eta, stalls = 0.0, False, 0
    first_eta: float | None = None
    mirrored = Mirrored(scenario)
    answers = Answers(scenario) if scenario.predictions else None
    while now < scenario.horizon_seconds:
        active = record.active
        assert active is not None
        now += TICK
        served = traffic.tick(now, active.routes)
        measured.add(now, served)
        if active.phase is Phase.SHADOW:
            assert active.shadow_from is not None
            mirrored.add(traffic.rng, served[CHAMPION][0])
            verdict = judge_shadow(policy, mirrored.comparison(), now=now,
                                   started=active.shadow_from)
            step = machine.judged(record, verdict, policy=policy, now=now)
            stalls += _stalls(step)
            record = _settle(step, now, policy)
            if record.active is not None and record.active.phase is Phase.ROLLING_BACK:
                return Outcome("rollback", now, traffic.exposure, 0, said_eta, stalls)
            continue
        if active.warm_at is None and policy.max_warmup_seconds > policy.warmup_seconds:
            record = _warm_up(record, measured, policy, now)
            continue
        if answers is not None:
            answers.add(traffic.rng, now, served)
        since = active.measure_from
        champion = challenger = None
        predictions = None
        if since is not None and now >= since:
            champion = measured.since(CHAMPION, since)
            challenger = measured.since(CHALLENGER, since)
            predictions = answers.since(since) if answers is not None else None
        window = Window(ready=True, start=since or now, end=now, champion=champion,
                        challenger=challenger, predictions=predictions)
        verdict = judge(policy, window, now=now, measure_from=since, extensions=active.extensions,
                        step_percent=active.traffic_percent, earlier_steps=active.earlier_steps)
        eta = verdict.time_to_decision_seconds
        if now <= 1800 and eta is not None:
            said_eta = True
            if now >= 900 and first_eta is None:
                first_eta = now + eta
        step = machine.judged(record, verdict, policy=policy, now=now)
        stalls += _stalls(step)
        record = _settle(step, now, policy)
        if record.active is None or record.active.phase is Phase.ROLLING_BACK:
            action = "promote" if record.active is None else "rollback"
            return Outcome(action, now, traffic.exposure, active.traffic_percent, said_eta,
                           stalls, first_eta)
    return Outcome("hold", now, traffic.exposure, record.active.traffic_percent, said_eta,
                   stalls, first_eta)


@dataclass(frozen=True)
class FlaggerStyle:
    """Flagger's canary analysis as usually configured: every `interval` the challenger's
    success rate and p99 over the last interval are checked against fixed thresholds; a passing
    check moves to the next step weight (promotion after the last), a failing one holds the
    weight, and `threshold` failed checks roll back. No data (no challenger requests) is a failed
    check, as Flagger's "no values found" is."""

    interval_seconds: float = 60.0
    threshold: int = 5
    min_success_rate: float = 0.99
    max_p99_ms: float = 500.0


def run_flagger(scenario: Scenario, seed: int, policy: RolloutPolicy,
                flagger: FlaggerStyle = FlaggerStyle()) -> Outcome:
    traffic = Traffic(scenario, seed)
    weights = policy.canary_steps
    step, failed, now = 0, 0, 0.0
    requests = errors = 0
    latencies: list[np.ndarray] = []
    while now < scenario.horizon_seconds:
        routes = {CHAMPION: 100 - weights[step], CHALLENGER: weights[step]}
        now += TICK
        n, e, values = traffic.tick(now, routes)[CHALLENGER]
        requests, errors = requests + n, errors + e
        latencies.append(values)
        if now % flagger.interval_seconds:
            continue
        merged = np.concatenate(latencies)
        ok = (requests > 0 and 1 - errors / requests >= flagger.min_success_rate
              and float(np.quantile(merged, 0.99)) <= flagger.max_p99_ms)
        requests = errors = 0
        latencies = []
        if not ok:
            failed += 1
            if failed >= flagger.threshold:
                return Outcome("rollback", now, traffic.exposure, weights[step])
            continue
        step += 1
        if step == len(weights):
            return Outcome("promote", now, traffic.exposure, weights[step - 1])
    return Outcome("hold", now, traffic.exposure, weights[step])


Runner = Callable[[Scenario, int, RolloutPolicy], Outcome]
