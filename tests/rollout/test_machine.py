"""The rollout state machine: unit flows and hypothesis stateful properties (pure, no servers)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from shared.rollout import machine
from shared.rollout.judge import Action, Verdict
from shared.rollout.machine import (
    ACTIVE,
    ApplyTraffic,
    DropShadowAlias,
    Emit,
    MirrorTraffic,
    Phase,
    PromoteAliases,
    Refused,
    RestoreAliases,
    SetChallengerAlias,
    SetShadowAlias,
)
from shared.rollout.policy import RolloutPolicy

POLICY = RolloutPolicy(steps=(5, 25, 50, 100), min_bake_seconds=60, warmup_seconds=10,
                       rollback_window_seconds=3600)


def started(version="2", champion="1", record=None, policy=POLICY, now=0.0):
    return machine.start(record, model_name="fraud", endpoint="fraud", version=version,
                         champion=champion, policy=policy, now=now, actor="gates",
                         reason="gates passed")


def verdict(action: Action) -> Verdict:
    return Verdict(action, f"judge says {action.value}", {"challenger_requests": 600.0},
                   looked=True, full_evidence=action is not Action.HOLD)


def kinds(step) -> list[str]:
    return [e.kind for e in step.effects if isinstance(e, Emit)]


def test_a_rollout_goes_from_canary_through_the_steps_to_promotion():
    step = started()
    assert step.record.active.phase is Phase.PENDING
    assert step.effects[0] == SetChallengerAlias(version="2")
    step = machine.begin(step.record, policy=POLICY, replay_ok=True, replay_detail="ok", now=1)
    assert step.record.active.routes == {"1": 95, "2": 5}
    assert kinds(step) == ["rollout.canary_started"]
    record = machine.traffic_applied(step.record, {"1": 95, "2": 5}, config_updated_at=1,
                                     warmup_seconds=10, now=2)
    assert record.active.measure_from == 12 and record.active.routes_applied
    for percent in (25, 50):
        step = machine.judged(record, verdict(Action.ADVANCE), policy=POLICY, now=100)
        assert step.record.active.traffic_percent == percent
        assert kinds(step) == ["rollout.traffic_ramped"]
        record = step.record
    step = machine.judged(record, verdict(Action.ADVANCE), policy=POLICY, now=200)
    assert step.record.active is None and step.record.champion == "2"
    assert step.record.last.phase is Phase.PROMOTED
    # The previous champion stays deployable (0%) for the rollback window.
    assert ApplyTraffic(routes={"2": 100, "1": 0}) in step.effects
    assert PromoteAliases(version="2", previous="1") in step.effects
    assert kinds(step) == ["rollout.traffic_ramped", "rollout.promoted"]
    assert [t.action for t in step.transitions] == ["promote"]
    assert step.transitions[0].figures == {"challenger_requests": 600.0}


def test_every_transition_has_who_when_why_and_a_stable_event_key():
    step = started()
    step = machine.begin(step.record, policy=POLICY, replay_ok=True, replay_detail="ok", now=5)
    (transition,) = step.transitions
    assert (transition.actor, transition.at, transition.seq) == ("gatehouse", 5, 2)
    assert "canary at 5%" in transition.reason
    (event,) = [e for e in step.effects if isinstance(e, Emit)]
    assert event.key == f"{transition.rollout_id}|2|rollout.canary_started"


def test_hold_records_the_verdict_without_a_transition():
    step = machine.begin(started().record, policy=POLICY, replay_ok=True, replay_detail="", now=1)
    held = machine.judged(step.record, verdict(Action.HOLD), policy=POLICY, now=2)
    assert held.transitions == () and held.effects == ()
    assert held.record.active.last_verdict["action"] == "hold"
    assert held.record.active.early_looks == 1


def test_failed_replay_never_gives_traffic():
    step = machine.begin(started().record, policy=POLICY, replay_ok=False,
                         replay_detail="3 of 3 failed", now=1)
    assert step.record.active.phase is Phase.ROLLING_BACK
    assert not any(isinstance(e, ApplyTraffic) for e in step.effects)
    assert kinds(step) == ["rollout.rollback_requested"]
    done = machine.complete_rollback(step.record, actor="gatehouse", now=2)
    assert done.record.champion == "1" and ApplyTraffic(routes={"1": 100}) in done.effects


def test_rollback_twice_is_refused_the_second_time_and_changes_nothing():
    step = machine.begin(started().record, policy=POLICY, replay_ok=True, replay_detail="", now=1)
    step = machine.request_rollback(step.record, actor="alice", reason="looks off", now=2,
                                    policy=POLICY)
    with pytest.raises(Refused, match="rolling back already"):
        machine.request_rollback(step.record, actor="bob", reason="me too", now=3, policy=POLICY)
    done = machine.complete_rollback(step.record, actor="gatehouse", now=4)
    with pytest.raises(Refused, match="nothing to roll back"):
        machine.request_rollback(done.record, actor="bob", reason="again", now=5, policy=POLICY)
    with pytest.raises(Refused):
        machine.complete_rollback(done.record, actor="gatehouse", now=6)


def test_late_rollback_within_the_window_restores_the_previous_champion():
    record = machine.begin(started().record, policy=POLICY.model_copy(update={"steps": (100,)}),
                           replay_ok=True, replay_detail="", now=1).record
    assert record.champion == "2" and record.last.phase is Phase.PROMOTED
    step = machine.request_rollback(record, actor="oncall", reason="monitoring alert", now=100,
                                    policy=POLICY)
    done = machine.complete_rollback(step.record, actor="gatehouse", now=101)
    assert done.record.champion == "1"
    assert RestoreAliases(version="2", restored="1", was_promoted=True) in done.effects
    # After the window, the previous champion is retired instead.
    record = machine.begin(started().record, policy=POLICY.model_copy(update={"steps": (100,)}),
                           replay_ok=True, replay_detail="", now=1).record
    with pytest.raises(Refused):
        machine.request_rollback(record, actor="oncall", reason="late", now=5000, policy=POLICY)
    retire = machine.retire_previous(record, policy=POLICY, now=5000)
    assert retire.record.last.routes == {"2": 100}


def test_first_version_ever_is_promoted_without_a_canary():
    step = started(version="1", champion=None)
    assert step.record.champion == "1" and step.record.active is None
    assert kinds(step) == ["rollout.promoted"]


def test_newer_challenger_queues_or_supersedes_per_policy():
    record = machine.begin(started().record, policy=POLICY, replay_ok=True, replay_detail="",
                           now=1).record
    queued = started(version="3", record=record, now=2).record
    assert queued.active.challenger == "2" and queued.queued.challenger == "3"
    assert queued.queued.phase is Phase.QUEUED
    # Only the newest waits; the one it replaces is recorded as dropped.
    newer = started(version="4", record=queued, now=2)
    assert newer.record.queued.challenger == "4"
    assert [(t.action, t.version) for t in newer.transitions] == [("dequeue", "3"),
                                                                  ("queue", "4")]
    # When the active one finishes, the queued one becomes pending against the new champion.
    step = machine.request_rollback(queued, actor="a", reason="r", now=3, policy=POLICY)
    done = machine.complete_rollback(step.record, actor="gatehouse", now=4)
    assert done.record.active.challenger == "3" and done.record.active.phase is Phase.PENDING
    assert done.record.active.champion == "1" and done.record.queued is None

    supersede = POLICY.model_copy(update={"on_newer_challenger": "supersede"})
    step = started(version="3", record=record, policy=supersede, now=2)
    assert step.record.active.challenger == "3" and step.record.last.phase is Phase.ABORTED
    assert ApplyTraffic(routes={"1": 100}) in step.effects
    assert [t.action for t in step.transitions] == ["supersede", "create"]


def test_duplicates_and_wrong_models_are_refused():
    record = started().record
    with pytest.raises(Refused, match="already has rollout"):
        started(record=record)
    with pytest.raises(Refused, match="champion already"):
        started(version="1", record=record)
    with pytest.raises(Refused, match="serves fraud"):
        machine.start(record, model_name="churn", endpoint="fraud", version="9", champion=None,
                      policy=POLICY, now=0, actor="a", reason="r")


def test_a_version_never_displaces_a_newer_one():
    record = machine.begin(started(version="5", champion="3").record, policy=POLICY,
                           replay_ok=True, replay_detail="", now=1).record
    record = started(version="7", record=record, now=2).record
    late = started(version="1", record=record, now=3)
    assert (late.record.active, late.record.queued) == (record.active, record.queued)
    [refusal] = late.transitions
    assert (refusal.action, refusal.version, refusal.to_phase) == ("superseded", "1",
                                                                   Phase.ABORTED)
    assert "v3 (the champion) is newer than v1" in refusal.reason
    assert [type(e).__name__ for e in late.effects] == ["RecordOnVersion"]
    between = started(version="6", record=record, now=3)
    assert "v7 (the queued challenger)" in between.transitions[0].reason
    supersede = POLICY.model_copy(update={"on_newer_challenger": "supersede"})
    older = started(version="4", record=record, policy=supersede, now=3)
    assert older.record.active == record.active and "v5 (the active" in older.transitions[0].reason


def test_a_start_event_is_decided_once_even_after_its_rollout_ended():
    step = machine.start(None, model_name="fraud", endpoint="fraud", version="2", champion="1",
                         policy=POLICY, now=0, actor="gates", reason="r", source_event_id="e-2")
    record = machine.begin(step.record, policy=POLICY, replay_ok=False, replay_detail="broken",
                           now=1).record
    record = machine.complete_rollback(record, actor="gatehouse", now=2).record
    assert record.active is None and record.decided_starts == ("e-2",)
    with pytest.raises(Refused, match="decided already"):
        machine.start(record, model_name="fraud", endpoint="fraud", version="2", champion="1",
                      policy=POLICY, now=3, actor="gates", reason="r", source_event_id="e-2")


def test_accumulate_counts_each_metrics_window_once():
    from shared.serving.base import HealthReport, VersionHealth

    def report(end, requests):
        return HealthReport("fraud", end - 60, end, {"2": VersionHealth("2", requests, 1,
                                                                        ((10.0, requests),))},
                            cumulative=False)

    evidence = machine.accumulate(None, report(160, 5), since=100)
    evidence = machine.accumulate(evidence, report(160, 5), since=100)  # the same minute again
    evidence = machine.accumulate(evidence, report(220, 7), since=100)
    evidence = machine.accumulate(evidence, report(120, 9), since=100)  # began before `since`
    health = machine.evidence_health(evidence)["2"]
    assert (health.requests, health.errors, health.latencies_ms) == (12, 2, ((10.0, 12),))


# ---- the shadow step ----

def shadowed(policy=POLICY, now=1.0):
    step = machine.begin(started(policy=policy).record, policy=policy, replay_ok=True,
                         replay_detail="embedded serving mirrors live traffic", now=now,
                         shadow=True)
    return step, machine.mirror_applied(step.record, "2", now=now + 1)


def test_the_shadow_step_mirrors_without_exposure_then_gives_the_first_step():
    step, record = shadowed()
    assert step.record.active.phase is Phase.SHADOW and step.record.active.routes == {"1": 100}
    assert [type(e).__name__ for e in step.effects] == ["SetShadowAlias", "MirrorTraffic",
                                                        "RecordOnVersion"]
    assert kinds(step) == []  # nobody is exposed: nothing to announce yet
    [transition] = step.transitions
    assert transition.action == "shadow" and "mirrored to v2" in transition.reason
    assert record.active.shadow_from == 2.0
    agreed = Verdict(Action.ADVANCE, "shadow step: agrees with the champion over 600 mirrored "
                                     "requests", {"mirrored_requests": 600.0}, looked=True)
    canary = machine.judged(record, agreed, policy=POLICY, now=50.0)
    assert canary.record.active.phase is Phase.CANARY
    assert canary.record.active.routes == {"1": 95, "2": 5}
    assert not canary.record.active.mirroring
    assert canary.effects[:3] == (MirrorTraffic(version=None), DropShadowAlias(version="2"),
                                  SetChallengerAlias(version="2"))
    assert kinds(canary) == ["rollout.canary_started"]
    [transition] = canary.transitions
    assert (transition.from_phase, transition.to_phase) == (Phase.SHADOW, Phase.CANARY)
    assert "agrees with the champion" in transition.reason
    assert transition.figures == {"mirrored_requests": 600.0}


def test_a_shadow_disagreement_rolls_back_and_stops_the_mirror():
    _, record = shadowed()
    unlike = Verdict(Action.ROLLBACK, "shadow step: prediction PSI 0.9 > 0.2",
                     {"prediction_psi": 0.9}, looked=True)
    step = machine.judged(record, unlike, policy=POLICY, now=10.0)
    assert step.record.active.phase is Phase.ROLLING_BACK
    assert "prediction PSI" in step.transitions[0].reason
    done = machine.complete_rollback(step.record, actor="gatehouse", now=80.0)
    assert MirrorTraffic(version=None) in done.effects
    assert DropShadowAlias(version="2") in done.effects
    assert done.record.last.phase is Phase.ROLLED_BACK and not done.record.last.mirroring


def test_a_shadow_step_held_past_max_shadow_seconds_stalls():
    policy = POLICY.model_copy(update={"max_shadow_seconds": 600.0, "max_hold_seconds": 10.0})
    _, record = shadowed(policy)
    waiting = Verdict(Action.HOLD, "shadow step: 30 of 500 mirrored requests scored",
                      {"mirrored_requests": 30.0, "window_seconds": 500.0},
                      time_to_decision_seconds=7800.0)
    quiet = machine.judged(record, waiting, policy=policy, now=500.0)
    assert quiet.transitions == () and quiet.record.active.phase is Phase.SHADOW
    stalled = machine.judged(quiet.record, waiting, policy=policy, now=603.0)
    [transition] = stalled.transitions
    assert transition.action == "stalled" and "in the shadow step" in transition.reason
    assert "max_shadow_seconds 600" in transition.reason
    assert kinds(stalled) == ["rollout.stalled"]


def test_a_shadowed_rollout_superseded_stops_its_mirror():
    supersede = POLICY.model_copy(update={"on_newer_challenger": "supersede"})
    _, record = shadowed(supersede)
    step = started(version="3", record=record, policy=supersede, now=5)
    assert MirrorTraffic(version=None) in step.effects
    assert DropShadowAlias(version="2") in step.effects
    assert step.record.active.challenger == "3"


# ---- properties ----

VERSIONS = st.sampled_from([str(v) for v in range(2, 9)])
ACTIONS = st.sampled_from(list(Action))


class RolloutMachine(RuleBasedStateMachine):
    """Random sequences of gates passing, judge verdicts, rollbacks and time passing, with the
    effects carried out against a model registry and endpoint."""

    @initialize(supersede=st.booleans())
    def setup(self, supersede):
        self.policy = POLICY.model_copy(update={
            "on_newer_challenger": "supersede" if supersede else "queue"})
        self.record = None
        self.now = 0.0
        self.gates_passed = {"1"}          # the champion before Gatehouse counts as approved
        self.aliases = {"champion": "1", "challenger": None, "shadow": None}
        self.served = {"1": 100}
        self.mirrored = None

    def _apply(self, step):
        for effect in step.effects:
            if isinstance(effect, ApplyTraffic):
                assert sum(effect.routes.values()) == 100
                self.served = dict(effect.routes)
            elif isinstance(effect, SetChallengerAlias):
                self.aliases["challenger"] = effect.version
            elif isinstance(effect, PromoteAliases):
                self.aliases["champion"] = effect.version
                self.aliases["challenger"] = None
            elif isinstance(effect, RestoreAliases):
                self.aliases["champion"] = effect.restored
                if self.aliases["challenger"] == effect.version:
                    self.aliases["challenger"] = None
            elif isinstance(effect, MirrorTraffic):
                self.mirrored = effect.version
            elif isinstance(effect, SetShadowAlias):
                self.aliases["shadow"] = effect.version
            elif isinstance(effect, DropShadowAlias) and self.aliases["shadow"] == effect.version:
                self.aliases["shadow"] = None
        record = step.record
        for effect in step.effects:
            record = machine.drop_effect(record, effect)
            if isinstance(effect, MirrorTraffic):
                record = machine.mirror_applied(record, effect.version, now=self.now)
            if isinstance(effect, ApplyTraffic):
                record = machine.traffic_applied(record, effect.routes, config_updated_at=self.now,
                                                 warmup_seconds=10, now=self.now)
        self.record = record

    @rule(version=VERSIONS)
    def gates_pass(self, version):
        self.gates_passed.add(version)
        try:
            step = machine.start(self.record, model_name="fraud", endpoint="fraud",
                                 version=version, champion="1", policy=self.policy, now=self.now,
                                 actor="gates", reason="passed")
        except Refused:
            return
        self._apply(step)

    @precondition(lambda self: self.record is not None and self.record.active is not None
                  and self.record.active.phase is Phase.PENDING)
    @rule(ok=st.booleans(), shadow=st.booleans())
    def replay(self, ok, shadow):
        self._apply(machine.begin(self.record, policy=self.policy, replay_ok=ok,
                                  replay_detail="replayed", now=self.now, shadow=shadow))

    @precondition(lambda self: self.record is not None and self.record.active is not None
                  and self.record.active.phase in (Phase.CANARY, Phase.SHADOW))
    @rule(action=ACTIONS)
    def judge(self, action):
        self._apply(machine.judged(self.record, verdict(action), policy=self.policy, now=self.now))

    @precondition(lambda self: self.record is not None)
    @rule()
    def person_rolls_back(self):
        try:
            self._apply(machine.request_rollback(self.record, actor="alice", reason="manual",
                                                 now=self.now, policy=self.policy))
        except Refused:
            pass

    @precondition(lambda self: self.record is not None and self.record.active is not None
                  and self.record.active.phase is Phase.ROLLING_BACK)
    @rule()
    def rollback_completes(self):
        restoring = self.record.active.champion
        self._apply(machine.complete_rollback(self.record, actor="gatehouse", now=self.now))
        # A rollback always restores the last champion: record, alias and traffic.
        assert self.record.champion == restoring
        assert self.aliases["champion"] == restoring
        assert self.served == {restoring: 100}

    @rule(seconds=st.sampled_from([1.0, 30.0, 3000.0]))
    def time_passes(self, seconds):
        self.now += seconds
        if self.record is not None:
            step = machine.retire_previous(self.record, policy=self.policy, now=self.now)
            if step is not None:
                self._apply(step)

    @invariant()
    def routes_always_sum_to_100(self):
        assert sum(self.served.values()) == 100
        if self.record is not None:
            for rollout in self.record.rollouts():
                assert sum(rollout.routes.values()) == 100, rollout

    @invariant()
    def champion_only_ever_a_version_that_passed_its_gates(self):
        assert self.aliases["champion"] in self.gates_passed
        if self.record is not None:
            assert self.record.champion in self.gates_passed

    @invariant()
    def at_most_one_active_rollout_per_endpoint(self):
        if self.record is None:
            return
        active = [r for r in self.record.rollouts() if r.phase in ACTIVE]
        assert len(active) <= 1
        assert self.record.active is None or self.record.active.phase in ACTIVE
        assert self.record.queued is None or self.record.queued.phase is Phase.QUEUED
        assert self.record.last is None or self.record.last.phase not in ACTIVE

    @invariant()
    def only_a_shadowed_challenger_is_mirrored_and_carries_shadow(self):
        active = self.record.active if self.record is not None else None
        if self.mirrored is None:
            assert self.aliases["shadow"] is None
            assert active is None or active.phase is not Phase.SHADOW
            return
        # Mirrored (and @shadow) only while the version is in its shadow step, or rolling back
        # from it until the rollback completes.
        assert active is not None and active.challenger == self.mirrored
        assert active.phase in (Phase.SHADOW, Phase.ROLLING_BACK) and active.mirroring
        assert self.aliases["shadow"] == self.mirrored

    @invariant()
    def a_shadowed_challenger_serves_no_user(self):
        active = self.record.active if self.record is not None else None
        if active is not None and active.phase is Phase.SHADOW:
            assert self.served.get(active.champion) == 100
            assert active.shadow_from is not None  # mirroring is on: its window is open

    @invariant()
    def the_champion_gets_traffic_unless_promotion_moved_it(self):
        if self.record is not None and self.record.active is not None \
                and self.record.active.phase is Phase.CANARY:
            assert self.served.get(self.record.champion, 0) > 0


TestRolloutMachine = RolloutMachine.TestCase
TestRolloutMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ---- warm-up and stalls ----

def canary(policy=POLICY, now=0.0):
    record = machine.begin(started(policy=policy).record, policy=policy, replay_ok=True,
                           replay_detail="ok", now=now).record
    return machine.traffic_applied(record, record.active.routes, config_updated_at=now,
                                   warmup_seconds=policy.warmup_seconds, now=now)


def test_warm_up_ends_when_the_challenger_is_as_fast_as_allowed_and_is_recorded():
    from shared.rollout.warmup import WarmupSample

    record = canary()
    cold = WarmupSample(30.0, 600.0, 60.0, 20)     # x10: cold
    record = machine.warming(record, sample=cold, policy=POLICY, now=30.0)
    assert record.active.warm_at is None and "warming up" in record.active.warmup["reason"]
    assert record.active.last_verdict["action"] == "hold"
    warm = WarmupSample(60.0, 70.0, 60.0, 20)
    record = machine.warming(record, sample=warm, policy=POLICY, now=60.0)
    assert record.active.warm_at == 60.0 and record.active.measure_from == 60.0
    assert "within 2 x the champion's" in record.active.warmup["reason"]
    assert [s[1] for s in record.active.warmup["samples"]] == [600.0, 70.0]


def test_warm_up_ends_when_steady_or_at_the_cap():
    from shared.rollout.warmup import WarmupSample

    policy = POLICY.model_copy(update={"warmup_stable_seconds": 60.0, "max_warmup_seconds": 300})
    record = canary(policy)
    for now in (30.0, 60.0, 90.0):   # x3 slower, steady: not getting faster, so warm
        record = machine.warming(record, sample=WarmupSample(now, 180.0 + now / 30, 60.0, 20),
                                 policy=policy, now=now)
    assert record.active.warm_at == 90.0 and "steady" in record.active.warmup["reason"]
    record = canary(policy)
    for now in (30.0, 150.0, 300.0):   # still falling at the cap
        record = machine.warming(record, sample=WarmupSample(now, 6000.0 / now, 1.0, 20),
                                 policy=policy, now=now)
    assert record.active.warm_at == 300.0 and "cap" in record.active.warmup["reason"]


def hold(reason="no challenger requests", figures=None, eta=None):
    return Verdict(Action.HOLD, reason, figures or {"window_seconds": 600.0,
                                                    "challenger_requests": 30.0},
                   time_to_decision_seconds=eta)


def test_a_step_held_past_max_hold_seconds_says_so_once_with_an_estimate():
    policy = POLICY.model_copy(update={"max_hold_seconds": 1000.0})
    record = canary(policy)
    quiet = machine.judged(record, hold(), policy=policy, now=999.0)
    assert quiet.transitions == () and quiet.effects == ()
    stalled = machine.judged(quiet.record, hold(eta=7200.0), policy=policy, now=1000.0)
    [transition] = stalled.transitions
    assert transition.action == "stalled" and "about 7200s more" in transition.reason
    [event] = [e for e in stalled.effects if isinstance(e, Emit)]
    assert event.kind == "rollout.stalled"
    assert event.payload["time_to_decision_seconds"] == 7200.0
    assert event.payload["challenger_requests_per_minute"] == 3.0
    assert event.payload["on_stall"] == "hold" and stalled.record.active.phase is Phase.CANARY
    again = machine.judged(stalled.record, hold(), policy=policy, now=5000.0)
    assert again.transitions == ()
    # An extension restarts the clock.
    extended = machine.judged(stalled.record, verdict(Action.EXTEND), policy=policy, now=5001.0)
    assert extended.record.active.stalled_at is None
    assert machine.judged(extended.record, hold(), policy=policy, now=6000.0).transitions == ()


def test_a_stalled_step_rolls_back_when_the_policy_says_abort():
    policy = POLICY.model_copy(update={"max_hold_seconds": 100.0, "on_stall": "abort"})
    step = machine.judged(canary(policy), hold(), policy=policy, now=100.0)
    assert [t.action for t in step.transitions] == ["stalled", "rollback_requested"]
    assert step.record.active.phase is Phase.ROLLING_BACK
    assert kinds(step) == ["rollout.stalled", "rollout.rollback_requested"]


def test_looks_are_kept_with_their_evidence():
    record = canary()
    figures = {"window_seconds": 60.0, "e_errors": 2.5, "error_rate_upper": 0.02,
               "p99_ratio": 1.0}
    for now in range(1, 30):
        record = machine.judged(record, hold("gathering", figures), policy=POLICY,
                                now=float(now)).record
    looks = record.active.looks
    assert len(looks) == machine.MAX_LOOKS and looks[-1]["at"] == 29.0
    assert looks[-1]["figures"] == {"window_seconds": 60.0, "e_errors": 2.5,
                                    "error_rate_upper": 0.02}


def test_a_first_version_the_registry_made_champion_is_deployed_at_100_percent():
    # first_version_becomes_champion: the gates set @champion on v1 before any rollout ran.
    step = started(version="1", champion="1")
    assert step.record.champion == "1" and step.record.active is None
    assert step.record.last.phase is Phase.PROMOTED
    assert ApplyTraffic(routes={"1": 100}) in step.effects
    assert [t.action for t in step.transitions] == ["bootstrap"]
    [recorded] = [e for e in step.effects if isinstance(e, machine.RecordOnVersion)]
    assert recorded.tags["gatehouse.champion_since"] == "0"  # now=0, in epoch milliseconds
