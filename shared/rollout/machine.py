"""The rollout state machine (pure: no I/O).

One `EndpointRecord` per serving endpoint holds at most one active rollout, at most one queued
challenger and the last finished rollout (kept for a late rollback). Every function takes a
record and returns a `Step`: the new record, the transition to record (who, when, why, figures)
and the effects the shell must carry out. Effects also wait in the record's outbox until done,
so a crash between saving a decision and acting on it is finished by the next tick.

    QUEUED -> PENDING -> [SHADOW] -> CANARY(step 0..n-1) -> PROMOTED
                 |          |            |   \\-> (extend: same step, longer bake)
                 \\----------+------------+--> ROLLING_BACK -> ROLLED_BACK    superseded: ABORTED

The shadow step (where the backend can mirror traffic and the policy wants it): the champion
keeps all traffic, each live request is mirrored to the challenger (answers logged, never
returned), and the challenger must agree with the champion (shared/rollout/shadow.py) before
it takes the first step's real traffic. While mirrored the version carries @shadow. Without
mirroring, PENDING replays recent payloads instead and goes straight to CANARY.

The stale version rule: a version never displaces a newer one. A start for version N is refused
when the endpoint's champion, its active rollout or its queued one is a newer version than N (a
GatesPassed redelivered late after a crash, a re-run of an old version). The refusal is recorded
as a `superseded` transition of an ABORTED rollout of N (the audit trail, with the reason also
tagged on the version); nothing else on the record changes.

Each start's source event is remembered (`decided_starts`), so the same GatesPassed delivered
again - after a crash, after its rollout has finished even - never starts a second rollout.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field

from shared.registry.tags import CHAMPION_SINCE
from shared.registry.versions import newer_holder
from shared.rollout import warmup
from shared.rollout.policy import RolloutPolicy
from shared.rollout.warmup import WarmupSample

if TYPE_CHECKING:
    from shared.rollout.judge import Verdict
    from shared.serving.base import HealthReport, VersionHealth


class Phase(str, Enum):
    QUEUED = "queued"
    PENDING = "pending"
    SHADOW = "shadow"
    CANARY = "canary"
    ROLLING_BACK = "rolling_back"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE = frozenset({Phase.PENDING, Phase.SHADOW, Phase.CANARY, Phase.ROLLING_BACK})
SERVICE = "gatehouse"
SUPERSEDED = "superseded"  # the action of a start refused by the stale version rule
MAX_DECIDED_STARTS = 50
MAX_LOOKS = 20
LOOK_FIGURES = frozenset({"challenger_requests", "champion_requests", "error_rate_lower",
                          "error_rate_upper", "error_rate_limit", "error_ratio_lower",
                          "error_ratio_upper", "over_p99_share_upper", "time_to_decision_s",
                          "window_seconds", "prediction_psi", "prediction_disagreement",
                          "disagreement_lower", "disagreement_upper", "mirrored_requests",
                          "mirrored_failures"})


class Refused(Exception):
    """The request does not apply to the endpoint's current state (nothing was changed)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- effects (what the shell does after saving) ----

class ApplyTraffic(_Model):
    type: Literal["apply_traffic"] = "apply_traffic"
    routes: dict[str, int]


class SetChallengerAlias(_Model):
    type: Literal["set_challenger_alias"] = "set_challenger_alias"
    version: str


class PromoteAliases(_Model):
    type: Literal["promote_aliases"] = "promote_aliases"
    version: str
    previous: str | None


class RestoreAliases(_Model):
    type: Literal["restore_aliases"] = "restore_aliases"
    version: str            # the version rolled back
    restored: str | None    # the champion it hands back to
    was_promoted: bool


class Emit(_Model):
    type: Literal["emit"] = "emit"
    kind: str               # an event kind of shared.events
    payload: dict[str, Any]
    key: str = ""           # stable per transition: a re-sent event keeps its id


class MirrorTraffic(_Model):
    """Mirror the endpoint's live requests to `version` (None: stop mirroring)."""

    type: Literal["mirror_traffic"] = "mirror_traffic"
    version: str | None


class SetShadowAlias(_Model):
    type: Literal["set_shadow_alias"] = "set_shadow_alias"
    version: str


class DropShadowAlias(_Model):
    """@shadow off `version` (left alone when it points at another version)."""

    type: Literal["drop_shadow_alias"] = "drop_shadow_alias"
    version: str


class RecordOnVersion(_Model):
    type: Literal["record_on_version"] = "record_on_version"
    version: str
    tags: dict[str, str]


Effect = Annotated[
    ApplyTraffic
    | SetChallengerAlias
    | PromoteAliases
    | RestoreAliases
    | Emit
    | RecordOnVersion
    | MirrorTraffic
    | SetShadowAlias
    | DropShadowAlias,
    Field(discriminator="type"),
]


# ---- state ----

class Rollout(_Model):
    id: str
    model_name: str
    endpoint: str
    challenger: str
    champion: str | None
    phase: Phase
    step_index: int = -1
    routes: dict[str, int]
    routes_applied: bool = False
    applied_at: float | None = None
    measure_from: float | None = None
    mirroring: bool = False             # live requests are mirrored to the challenger (@shadow)
    shadow_from: float | None = None    # when mirroring began: the shadow step's window
    warm_at: float | None = None        # when the warm-up rule said the challenger is warm
    warmup: dict[str, Any] | None = None  # its samples and the reason it ended (or goes on)
    extensions: int = 0
    decided_at: float | None = None     # the step's last decision (extend): the stall clock
    stalled_at: float | None = None     # when rollout.stalled went out for this step
    looks: tuple[dict[str, Any], ...] = ()  # the latest looks: evidence, bounds, why it held
    early_looks: int = 0
    decision_looks: int = 0
    created_at: float
    updated_at: float
    promoted_at: float | None = None
    finished_at: float | None = None
    rollback_requested_at: float | None = None
    reason: str = ""
    last_verdict: dict[str, Any] | None = None
    last_error: str | None = None
    evidence: dict[str, Any] | None = None
    earlier_steps: tuple[dict[str, Any], ...] = ()  # the judge's StepEvidence of steps done
    source_event_id: str | None = None

    @property
    def traffic_percent(self) -> int:
        return self.routes.get(self.challenger, 0)


class EndpointRecord(_Model):
    endpoint: str
    model_name: str
    champion: str | None = None
    active: Rollout | None = None
    queued: Rollout | None = None
    last: Rollout | None = None
    seq: int = 0
    outbox: tuple[Effect, ...] = ()
    decided_starts: tuple[str, ...] = ()  # source event ids of the latest starts decided
    drainer: str | None = None  # who carries out the outbox now ...
    drain_until: float = 0.0    # ... until then (a crashed drainer's lease runs out)

    def rollouts(self) -> list[Rollout]:
        return [r for r in (self.active, self.queued, self.last) if r is not None]


class RecordChanges(TypedDict, total=False):
    """What a step may change on the endpoint's record besides its sequence and outbox."""

    champion: str | None
    active: Rollout | None
    queued: Rollout | None
    last: Rollout | None


class QueueHandover(TypedDict):
    """The record changes that make the queued challenger (if any) the active rollout."""

    active: Rollout | None
    queued: Rollout | None


class Transition(_Model):
    seq: int
    rollout_id: str
    version: str
    at: float
    actor: str
    action: str
    from_phase: Phase | None
    to_phase: Phase
    reason: str
    routes: dict[str, int]
    figures: dict[str, float] = Field(default_factory=dict)
    tests: list[dict[str, Any]] = Field(default_factory=list)


class Step(_Model):
    record: EndpointRecord
    transitions: tuple[Transition, ...] = ()
    effects: tuple[Effect, ...] = ()

    def then(self, later: Step) -> Step:
        """This step followed by `later` (which was computed from this step's record)."""
        return Step(record=later.record, transitions=(*self.transitions, *later.transitions),
                    effects=(*self.effects, *later.effects))


def routes_for(champion: str | None, challenger: str, percent: int) -> dict[str, int]:
    """Champion and challenger splitting 100 percent (champion absent: challenger has all)."""
    if champion is None or champion == challenger or percent >= 100:
        routes = {challenger: 100}
        if champion is not None and champion != challenger:
            routes[champion] = 0
        return routes
    return {champion: 100 - percent, challenger: percent}


def _decision(actor: str, reason: str, figures: dict[str, float] | None = None) -> dict[str, Any]:
    return {"actor": actor, "reason": reason, "metrics": dict(figures or {})}


def _step(record: EndpointRecord, before: Rollout | None, after: Rollout, *, action: str,
          actor: str, reason: str, now: float, effects: list[Effect],
          figures: dict[str, float] | None = None, tests: list[dict[str, Any]] | None = None,
          **changes: Unpack[RecordChanges]) -> Step:
    seq = record.seq + 1
    transition = Transition(seq=seq, rollout_id=after.id, version=after.challenger, at=now,
                            actor=actor, action=action,
                            from_phase=before.phase if before else None, to_phase=after.phase,
                            reason=reason, routes=after.routes, figures=dict(figures or {}),
                            tests=list(tests or []))
    tags = {"gatehouse.rollout.id": after.id, "gatehouse.rollout.phase": after.phase.value,
            "gatehouse.rollout.traffic_percent": str(after.traffic_percent),
            "gatehouse.rollout.last_action": action,
            "gatehouse.rollout.last_reason": f"{actor}: {reason}"[:4000]}
    if after.phase is Phase.PROMOTED and (before is None or before.phase is not Phase.PROMOTED):
        tags[CHAMPION_SINCE] = str(int(now * 1000))  # the audit's promotion lead time
    effects = [e.model_copy(update={"key": f"{after.id}|{seq}|{e.kind}"}) if isinstance(e, Emit)
               else e for e in effects]
    effects.append(RecordOnVersion(version=after.challenger, tags=tags))
    new = record.model_copy(update={"seq": seq, "outbox": (*record.outbox, *effects), **changes})
    return Step(record=new, transitions=(transition,), effects=tuple(effects))


def _event(kind: str, rollout: Rollout, decision: dict[str, Any], **fields: Any) -> Emit:
    return Emit(kind=kind, payload={"model_name": rollout.model_name, "version": rollout.challenger,
                                    "endpoint": rollout.endpoint, "decision": decision, **fields})


def _activate_queued(record: EndpointRecord, now: float) -> QueueHandover:
    """Record changes that make the queued challenger (if any) the active rollout."""
    queued = record.queued
    if queued is None:
        return {"active": None, "queued": None}
    champion = record.champion
    pending = queued.model_copy(update={
        "phase": Phase.PENDING, "champion": champion, "updated_at": now,
        "routes": {champion: 100} if champion else {queued.challenger: 100}})
    return {"active": pending, "queued": None}


def new_rollout(model_name: str, endpoint: str, version: str, champion: str | None,
                phase: Phase, now: float, source_event_id: str | None = None) -> Rollout:
    return Rollout(id=uuid.uuid4().hex[:16], model_name=model_name, endpoint=endpoint,
                   challenger=version, champion=champion, phase=phase,
                   routes={champion: 100} if champion else {version: 100},
                   created_at=now, updated_at=now, source_event_id=source_event_id)


def start(record: EndpointRecord | None, *, model_name: str, endpoint: str, version: str,
          champion: str | None, policy: RolloutPolicy, now: float, actor: str, reason: str,
          source_event_id: str | None = None) -> Step:
    """A version passed its gates: start (or queue) its rollout on the endpoint."""
    request = _StartRequest(model_name=model_name, endpoint=endpoint, version=str(version),
                            actor=actor, reason=reason, now=now,
                            source_event_id=source_event_id)
    if record is None:
        # A first version that passed with `first_version_becomes_champion` holds @champion in
        # the registry before anything serves it: it is bootstrapped (deployed at 100%).
        record = EndpointRecord(endpoint=endpoint, model_name=model_name,
                                champion=None if champion == request.version else champion)
    _refuse_unless_startable(record, request)
    return _remember_start(_decide_start(record, request, policy), source_event_id)


def _decide_start(record: EndpointRecord, request: _StartRequest, policy: RolloutPolicy) -> Step:
    stale = stale_reason(record, request.version)
    if stale is not None:
        return _refuse_stale(record, request, stale)
    if record.champion is None and record.active is None:
        return _bootstrap(record, request, policy)
    active = record.active
    if active is None:
        return _create(record, request)
    if policy.on_newer_challenger == "supersede" and active.phase in (Phase.PENDING,
                                                                        Phase.SHADOW,
                                                                        Phase.CANARY):
        return _supersede(record, active, request)
    return _queue(record, active, request)


def stale_reason(record: EndpointRecord, version: str) -> str | None:
    """Why a start of `version` would displace a newer version (None: it would not)."""
    newer = newer_holder(version, {
        "the champion": record.champion,
        "the active rollout's challenger": record.active.challenger if record.active else None,
        "the queued challenger": record.queued.challenger if record.queued else None})
    if newer is None:
        return None
    role, holder = newer
    return (f"superseded: v{holder} ({role}) is newer than v{version}; a version never "
            f"displaces a newer one")


def _refuse_stale(record: EndpointRecord, request: _StartRequest, reason: str) -> Step:
    """The refusal, recorded: a transition of an ABORTED rollout that never ran (and the reason
    tagged on the version); the record's rollouts are left as they are."""
    refused = request.rollout(record.champion, Phase.ABORTED).model_copy(update={
        "finished_at": request.now, "reason": reason})
    return _step(record, None, refused, action=SUPERSEDED, actor=request.actor, reason=reason,
                 now=request.now, effects=[])


def _remember_start(step: Step, source_event_id: str | None) -> Step:
    if not source_event_id:
        return step
    decided = (*step.record.decided_starts, source_event_id)[-MAX_DECIDED_STARTS:]
    return step.model_copy(update={"record": step.record.model_copy(
        update={"decided_starts": decided})})


@dataclass(frozen=True)
class _StartRequest:
    """A version that passed its gates, asking for a rollout."""

    model_name: str
    endpoint: str
    version: str
    actor: str
    reason: str
    now: float
    source_event_id: str | None

    def rollout(self, champion: str | None, phase: Phase) -> Rollout:
        return new_rollout(self.model_name, self.endpoint, self.version, champion, phase,
                           self.now, self.source_event_id)


def _refuse_unless_startable(record: EndpointRecord, request: _StartRequest) -> None:
    model_name, version = request.model_name, request.version
    if request.source_event_id and request.source_event_id in record.decided_starts:
        raise Refused(f"the start asked by event {request.source_event_id} was decided already")
    if record.model_name != model_name:
        raise Refused(f"endpoint {request.endpoint} serves {record.model_name}, not {model_name}")
    if version == record.champion:
        raise Refused(f"{model_name} v{version} is the champion already")
    for existing in (record.active, record.queued):
        if existing is not None and existing.challenger == version:
            raise Refused(f"{model_name} v{version} already has rollout {existing.id} "
                          f"({existing.phase.value})")


def _bootstrap(record: EndpointRecord, request: _StartRequest, policy: RolloutPolicy) -> Step:
    """Nothing serves yet: the first version that passed its gates becomes the champion."""
    now, actor, reason = request.now, request.actor, request.reason
    rollout = request.rollout(None, Phase.PROMOTED).model_copy(update={
        "step_index": len(policy.steps) - 1, "promoted_at": now, "finished_at": now,
        "reason": reason})
    decision = _decision(actor, f"first version to pass its gates: {reason}")
    return _step(record, None, rollout, action="bootstrap", actor=actor, reason=reason,
                 now=now, effects=[ApplyTraffic(routes=rollout.routes),
                                   PromoteAliases(version=request.version, previous=None),
                                   _event("rollout.promoted", rollout, decision,
                                          previous_champion=None)],
                 last=rollout, champion=request.version)


def _create(record: EndpointRecord, request: _StartRequest) -> Step:
    """The endpoint is free: the rollout starts pending its replay."""
    pending = request.rollout(record.champion, Phase.PENDING)
    return _step(record, None, pending, action="create", actor=request.actor,
                 reason=request.reason, now=request.now,
                 effects=[SetChallengerAlias(version=request.version)], active=pending)


def _queue(record: EndpointRecord, active: Rollout, request: _StartRequest) -> Step:
    """The version waits for the active rollout; only the newest waits, an older one is
    dropped."""
    now, actor = request.now, request.actor
    queued = request.rollout(record.champion, Phase.QUEUED)
    step = Step(record=record)
    if record.queued is not None:
        dropped = record.queued.model_copy(update={
            "phase": Phase.ABORTED, "finished_at": now, "updated_at": now,
            "reason": f"superseded in the queue by v{request.version}"})
        step = _step(record, record.queued, dropped, action="dequeue", actor=actor,
                     now=now, reason=dropped.reason, effects=[], queued=None)
    return step.then(_step(step.record, None, queued, action="queue", actor=actor,
                           now=now, effects=[], queued=queued,
                           reason=f"waiting for rollout {active.id} of "
                                  f"v{active.challenger}"))


def _supersede(record: EndpointRecord, active: Rollout, request: _StartRequest) -> Step:
    """The active rollout is aborted, its traffic handed back, and the version starts."""
    now, actor, champion = request.now, request.actor, record.champion
    aborted = active.model_copy(update={
        "phase": Phase.ABORTED, "routes": {champion: 100} if champion else active.routes,
        "routes_applied": False, "finished_at": now, "updated_at": now,
        "reason": f"superseded by v{request.version}"})
    step = _step(record, active, aborted, action="supersede", actor=actor, now=now,
                 reason=f"superseded by v{request.version}",
                 effects=[ApplyTraffic(routes=aborted.routes), *_stop_mirroring(active),
                          RestoreAliases(version=active.challenger, restored=champion,
                                         was_promoted=False)],
                 last=aborted, active=None)
    return step.then(_create(step.record, request))


def _require_active(record: EndpointRecord, *phases: Phase) -> Rollout:
    active = record.active
    if active is None or active.phase not in phases:
        found = active.phase.value if active else "no active rollout"
        raise Refused(f"{record.endpoint}: expected a rollout in "
                      f"{'/'.join(p.value for p in phases)}, found {found}")
    return active


def begin(record: EndpointRecord, *, policy: RolloutPolicy, replay_ok: bool, replay_detail: str,
          now: float, actor: str = SERVICE, shadow: bool = False) -> Step:
    """After the replay: the shadow step (`shadow`: the backend mirrors traffic), else the first
    canary step, or a rollback when the replay failed."""
    active = _require_active(record, Phase.PENDING)
    if not replay_ok:
        return request_rollback(record, actor=actor, now=now, policy=policy,
                                reason=f"replay of recent live payloads failed: {replay_detail}")
    if shadow:
        return _enter_shadow(record, active, actor=actor, now=now, detail=replay_detail)
    return _first_step(record, active, policy=policy, actor=actor, now=now, detail=replay_detail)


def _first_step(record: EndpointRecord, active: Rollout, *, policy: RolloutPolicy, actor: str,
                now: float, detail: str) -> Step:
    """The challenger's first real traffic (the first canary step, or promotion without one);
    mirroring, if on, stops."""
    if not policy.canary_steps:
        return _promote(record, active, actor=actor, now=now,
                        reason=f"no canary steps in the policy; {detail}")
    percent = policy.canary_steps[0]
    canary = active.model_copy(update={
        "phase": Phase.CANARY, "step_index": 0, "mirroring": False,
        "routes": routes_for(active.champion, active.challenger, percent),
        "routes_applied": False, "applied_at": None, "measure_from": None, "decided_at": now,
        "stalled_at": None, "looks": (), "updated_at": now, "reason": detail})
    decision = _decision(actor, f"canary at {percent}%; {detail}")
    return _step(record, active, canary, action="canary", actor=actor, now=now,
                 reason=decision["reason"],
                 effects=[*_stop_mirroring(active),
                          SetChallengerAlias(version=active.challenger),  # queued ones too
                          ApplyTraffic(routes=canary.routes),
                          _event("rollout.canary_started", canary, decision,
                                 champion_version=active.champion, traffic_percent=percent)],
                 active=canary)


def _enter_shadow(record: EndpointRecord, active: Rollout, *, actor: str, now: float,
                  detail: str) -> Step:
    """The champion keeps all traffic; its live requests are mirrored to the challenger."""
    shadowed = active.model_copy(update={
        "phase": Phase.SHADOW, "mirroring": True, "shadow_from": None, "decided_at": now,
        "stalled_at": None, "updated_at": now, "reason": detail})
    reason = (f"shadow step: live requests mirrored to v{active.challenger}, its answers never "
              f"returned; it takes traffic once it agrees with v{active.champion}; {detail}")
    return _step(record, active, shadowed, action="shadow", actor=actor, now=now, reason=reason,
                 effects=[SetShadowAlias(version=active.challenger),
                          MirrorTraffic(version=active.challenger)],
                 active=shadowed)


def _stop_mirroring(rollout: Rollout) -> list[Effect]:
    """Mirroring off and @shadow removed, for a rollout leaving the shadow step (or none)."""
    if not rollout.mirroring:
        return []
    return [MirrorTraffic(version=None), DropShadowAlias(version=rollout.challenger)]


def mirror_applied(record: EndpointRecord, version: str | None, *, now: float) -> EndpointRecord:
    """The backend mirrors to `version` now: the shadow step's window opens."""
    active = record.active
    if (active is None or active.phase is not Phase.SHADOW or not active.mirroring
            or version != active.challenger or active.shadow_from is not None):
        return record
    return record.model_copy(update={"active": active.model_copy(
        update={"shadow_from": now, "updated_at": now})})


def traffic_applied(record: EndpointRecord, routes: dict[str, int], *, config_updated_at:
                    float | None, warmup_seconds: float, now: float) -> EndpointRecord:
    """The backend serves `routes` now: the measurement window opens after the warm-up."""
    active, last = record.active, record.last
    if active is not None and active.routes == routes and not active.routes_applied:
        settled = max(now, config_updated_at or now)
        applied = active.model_copy(update={"routes_applied": True, "applied_at": settled,
                                            "measure_from": settled + warmup_seconds,
                                            "warm_at": None, "warmup": None,
                                            "evidence": None, "updated_at": now})
        return record.model_copy(update={"active": applied})
    if last is not None and last.routes == routes and not last.routes_applied:
        applied = last.model_copy(update={"routes_applied": True, "applied_at": now,
                                          "updated_at": now})
        return record.model_copy(update={"last": applied})
    return record


def lease_drain(record: EndpointRecord, drainer: str, now: float,
                lease_seconds: float) -> EndpointRecord | None:
    """The record with its outbox leased to `drainer`, or None while another drainer's lease
    runs: two workers carrying out one outbox at once would each do its effects."""
    if record.drainer not in (None, drainer) and record.drain_until > now:
        return None
    return record.model_copy(update={"drainer": drainer, "drain_until": now + lease_seconds})


def drop_effect(record: EndpointRecord, effect: Effect) -> EndpointRecord:
    """The effect was carried out: take it off the outbox."""
    outbox = list(record.outbox)
    if effect in outbox:
        outbox.remove(effect)
    released = {} if outbox else {"drainer": None, "drain_until": 0.0}
    return record.model_copy(update={"outbox": tuple(outbox), **released})


def warming(record: EndpointRecord, *, sample: WarmupSample | None, policy: RolloutPolicy,
            now: float) -> EndpointRecord:
    """One warm-up look at the active canary (shared.rollout.warmup): the sample kept, and once
    the challenger is warm, measuring starts now."""
    active = record.active
    if active is None or active.warm_at is not None or active.applied_at is None:
        return record
    kept = [WarmupSample.from_list(s) for s in (active.warmup or {}).get("samples", [])]
    if sample is not None:
        kept = [*kept, sample][-warmup.MAX_SAMPLES:]
    warmth = warmup.assess(policy, active.applied_at, tuple(kept), now)
    update: dict[str, Any] = {
        "warmup": {"samples": [s.as_list() for s in kept], "reason": warmth.reason,
                   "warm": warmth.warm},
        "last_verdict": {"action": "hold", "reason": warmth.reason, "figures": {},
                         "tests": [], "time_to_decision_seconds": None},
        "updated_at": now}
    if warmth.warm:
        update.update(warm_at=now, measure_from=max(now, active.measure_from or now))
    return record.model_copy(update={"active": active.model_copy(update=update)})


def _look_summary(verdict: dict[str, Any], now: float) -> dict[str, Any]:
    figures = verdict.get("figures") or {}
    return {"at": now, "action": verdict.get("action"),
            "reason": str(verdict.get("reason", ""))[:600],
            "figures": {k: v for k, v in figures.items() if k in LOOK_FIGURES
                        or k.startswith("e_")}}


def note(record: EndpointRecord, *, verdict: dict[str, Any] | None = None,
         error: str | None = None, now: float, early_look: bool = False,
         evidence: dict[str, Any] | None = None) -> EndpointRecord:
    """Remember the latest hold/verdict or error on the active rollout (not a transition)."""
    active = record.active
    if active is None:
        return record
    update: dict[str, Any] = {"updated_at": now, "last_error": error}
    if verdict is not None:
        update["last_verdict"] = verdict
        update["looks"] = (*active.looks, _look_summary(verdict, now))[-MAX_LOOKS:]
    if early_look:
        update["early_looks"] = active.early_looks + 1
    if evidence is not None:
        update["evidence"] = evidence
    return record.model_copy(update={"active": active.model_copy(update=update)})


def _promote(record: EndpointRecord, active: Rollout, *, actor: str, now: float, reason: str,
             figures: dict[str, float] | None = None,
             tests: list[dict[str, Any]] | None = None) -> Step:
    promoted = active.model_copy(update={
        "phase": Phase.PROMOTED, "step_index": active.step_index + 1, "mirroring": False,
        "routes": routes_for(active.champion, active.challenger, 100), "routes_applied": False,
        "promoted_at": now, "finished_at": now, "updated_at": now, "reason": reason})
    decision = _decision(actor, reason, figures)
    after = record.model_copy(update={"champion": active.challenger})
    return _step(after, active, promoted, action="promote", actor=actor, reason=reason, now=now,
                 figures=figures, tests=tests,
                 effects=[ApplyTraffic(routes=promoted.routes), *_stop_mirroring(active),
                          PromoteAliases(version=active.challenger, previous=active.champion),
                          _event("rollout.traffic_ramped", promoted, decision,
                                 from_percent=active.traffic_percent, to_percent=100),
                          _event("rollout.promoted", promoted, decision,
                                 previous_champion=active.champion)],
                 last=promoted, **_activate_queued(after, now))


def judged(record: EndpointRecord, verdict: Verdict, *, policy: RolloutPolicy, now: float,
           actor: str = SERVICE) -> Step:
    """Apply the judge's verdict (shared.rollout.judge.Verdict) to the active canary."""
    from shared.rollout.judge import Action

    active = _require_active(record, Phase.CANARY, Phase.SHADOW)
    if active.phase is Phase.SHADOW:
        return _shadow_judged(record, active, verdict, policy=policy, now=now, actor=actor)
    summary = verdict.summary()
    figures, tests = verdict.figures, [t.as_dict() for t in verdict.tests]
    if verdict.action is Action.HOLD:
        held = note(record, verdict=summary, now=now, early_look=verdict.looked)
        return _stall(held, verdict, policy=policy, now=now, actor=actor) or Step(record=held)
    if verdict.action is Action.ROLLBACK:
        return request_rollback(record, actor=actor, reason=verdict.reason, figures=figures,
                                tests=tests, now=now, policy=policy)
    counted = active.model_copy(update={"decision_looks": active.decision_looks + 1,
                                        "last_verdict": summary})
    if verdict.action is Action.EXTEND:
        extended = counted.model_copy(update={"extensions": active.extensions + 1,
                                              "decided_at": now, "stalled_at": None,
                                              "updated_at": now})
        return _step(record, active, extended, action="extend", actor=actor, now=now,
                     reason=verdict.reason, figures=figures, tests=tests, effects=[],
                     active=extended)
    next_index = active.step_index + 1
    if verdict.action is Action.PROMOTE or next_index >= len(policy.canary_steps):
        return _promote(record, counted, actor=actor, now=now, reason=verdict.reason,
                        figures=figures, tests=tests)
    percent = policy.canary_steps[next_index]
    ramped = counted.model_copy(update={
        "earlier_steps": (*active.earlier_steps, *([verdict.step] if verdict.step else [])),
        "step_index": next_index, "routes": routes_for(active.champion, active.challenger, percent),
        "routes_applied": False, "applied_at": None, "measure_from": None, "extensions": 0,
        "evidence": None, "decided_at": now, "stalled_at": None, "looks": (),
        "updated_at": now})
    decision = _decision(actor, verdict.reason, figures)
    return _step(record, active, ramped, action="advance", actor=actor, now=now,
                 reason=verdict.reason, figures=figures, tests=tests,
                 effects=[ApplyTraffic(routes=ramped.routes),
                          _event("rollout.traffic_ramped", ramped, decision,
                                 from_percent=active.traffic_percent, to_percent=percent)],
                 active=ramped)


def _shadow_judged(record: EndpointRecord, active: Rollout, verdict: Verdict, *,
                   policy: RolloutPolicy, now: float, actor: str) -> Step:
    """The shadow step's verdict (shared/rollout/shadow.py): agreed (ADVANCE, PROMOTE) ->
    the first real traffic; ROLLBACK -> rolled back with no user having seen an answer; else
    held (and, past `max_shadow_seconds`, stalled like any other hold)."""
    from shared.rollout.judge import Action

    if verdict.action is Action.ROLLBACK:
        return request_rollback(record, actor=actor, reason=verdict.reason,
                                figures=verdict.figures,
                                tests=[t.as_dict() for t in verdict.tests], now=now,
                                policy=policy)
    if verdict.action in (Action.ADVANCE, Action.PROMOTE):
        agreed = active.model_copy(update={"last_verdict": verdict.summary()})
        step = _first_step(record, agreed, policy=policy, actor=actor, now=now,
                           detail=verdict.reason)
        transition = step.transitions[-1].model_copy(update={"figures": dict(verdict.figures)})
        return step.model_copy(update={"transitions": (*step.transitions[:-1], transition)})
    held = note(record, verdict=verdict.summary(), now=now)
    return _stall(held, verdict, policy=policy, now=now, actor=actor) or Step(record=held)


def _stall(record: EndpointRecord, verdict: Verdict, *, policy: RolloutPolicy, now: float,
           actor: str) -> Step | None:
    """A step held past `max_hold_seconds` (the shadow step: `max_shadow_seconds`) without a
    decision: say so once (rollout.stalled, with the time to a decision at the observed
    traffic), and roll back if the policy says."""
    active = record.active
    shadow = active is not None and active.phase is Phase.SHADOW
    limit = policy.max_shadow_seconds if shadow else policy.max_hold_seconds
    if active is None or limit <= 0 or active.stalled_at is not None:
        return None
    started = [t for t in (active.applied_at, active.decided_at, active.shadow_from)
               if t is not None]
    clock = max(started) if started else now
    held = now - clock
    if held < limit:
        return None
    figures = verdict.figures
    window = figures.get("window_seconds") or 0.0
    rate = (60 * figures["challenger_requests"] / window
            if window > 0 and "challenger_requests" in figures else None)
    eta = verdict.time_to_decision_seconds
    outlook = (f"about {eta:.0f}s more to a decision at the observed traffic" if eta is not None
               else "no estimate of the time to a decision")
    where = "in the shadow step" if shadow else f"at {active.traffic_percent}%"
    setting = "max_shadow_seconds" if shadow else "max_hold_seconds"
    reason = (f"held {held:.0f}s {where} without a decision ({setting} {limit:.0f}): "
              f"{verdict.reason}; {outlook}; "
              f"policy: {'roll back' if policy.on_stall == 'abort' else 'keep holding'}")
    stalled = active.model_copy(update={"stalled_at": now, "updated_at": now})
    decision = _decision(actor, reason, figures)
    step = _step(record, active, stalled, action="stalled", actor=actor, now=now, reason=reason,
                 figures=figures, tests=[t.as_dict() for t in verdict.tests],
                 effects=[_event("rollout.stalled", stalled, decision,
                                 traffic_percent=active.traffic_percent, held_seconds=held,
                                 time_to_decision_seconds=eta,
                                 challenger_requests_per_minute=rate,
                                 on_stall=policy.on_stall)],
                 active=stalled)
    if policy.on_stall == "abort":
        return step.then(request_rollback(step.record, actor=actor, now=now, policy=policy,
                                          reason=f"stalled: {reason}", figures=figures))
    return step


def rollback_target(record: EndpointRecord, policy: RolloutPolicy, now: float) -> Rollout | None:
    """The rollout a rollback would undo now: the active one, or a promotion still in its
    rollback window."""
    if record.active is not None:
        return record.active
    last = record.last
    if (last is not None and last.phase is Phase.PROMOTED and last.champion is not None
            and last.promoted_at is not None
            and now - last.promoted_at <= policy.rollback_window_seconds
            and record.champion == last.challenger):
        return last
    return None


def request_rollback(record: EndpointRecord, *, actor: str, reason: str, now: float,
                     policy: RolloutPolicy, figures: dict[str, float] | None = None,
                     tests: list[dict[str, Any]] | None = None) -> Step:
    """Someone (the judge, monitoring, a person) wants the challenger out."""
    target = rollback_target(record, policy, now)
    if target is None:
        raise Refused(f"{record.endpoint}: nothing to roll back (no active rollout and no "
                      f"promotion within the rollback window)")
    if target.phase is Phase.ROLLING_BACK:
        raise Refused(f"{record.endpoint}: rollout {target.id} is rolling back already")
    rolling = target.model_copy(update={"phase": Phase.ROLLING_BACK, "rollback_requested_at": now,
                                        "updated_at": now, "reason": reason})
    decision = _decision(actor, reason, figures)
    changes: RecordChanges = {"active": rolling}
    if target is record.last:
        changes["last"] = None
    return _step(record, target, rolling, action="rollback_requested", actor=actor, now=now,
                 reason=reason, figures=figures, tests=tests,
                 effects=[_event("rollout.rollback_requested", rolling, decision)], **changes)


def complete_rollback(record: EndpointRecord, *, actor: str, now: float) -> Step:
    """Traffic back to 100% on the last champion, aliases restored, rollout closed."""
    active = _require_active(record, Phase.ROLLING_BACK)
    restored = active.champion
    if restored is None:
        raise Refused(f"{record.endpoint}: v{active.challenger} has no champion to hand back to")
    routes = {restored: 100}
    closed = active.model_copy(update={"phase": Phase.ROLLED_BACK, "routes": routes,
                                       "routes_applied": False, "finished_at": now,
                                       "mirroring": False, "updated_at": now})
    reason = f"traffic back to v{restored}: {active.reason}"
    decision = _decision(actor, reason)
    after = record.model_copy(update={"champion": restored})
    return _step(after, active, closed, action="rolled_back", actor=actor, reason=reason, now=now,
                 effects=[ApplyTraffic(routes=routes), *_stop_mirroring(active),
                          RestoreAliases(version=active.challenger, restored=restored,
                                         was_promoted=active.promoted_at is not None),
                          _event("rollout.rollback_completed", closed, decision,
                                 restored_version=restored)],
                 last=closed, **_activate_queued(after, now))


def retire_previous(record: EndpointRecord, *, policy: RolloutPolicy, now: float,
                    actor: str = SERVICE) -> Step | None:
    """After the rollback window, stop serving the previous champion (kept at 0%)."""
    last = record.last
    if (record.active is not None or last is None or last.phase is not Phase.PROMOTED
            or last.promoted_at is None or len(last.routes) < 2
            or now - last.promoted_at <= policy.rollback_window_seconds):
        return None
    retired = last.model_copy(update={"routes": {last.challenger: 100}, "routes_applied": False,
                                      "updated_at": now})
    return _step(record, last, retired, action="retire_previous", actor=actor, now=now,
                 reason=f"rollback window over: v{last.champion} no longer served",
                 effects=[ApplyTraffic(routes=retired.routes)], last=retired)


def accumulate(evidence: dict[str, Any] | None, report: HealthReport,
               since: float) -> dict[str, Any]:
    """Fold one per-window health report (Databricks: the last minute) into the evidence of
    the step, counting each window once and none that began before `since`."""
    evidence = evidence or {"last_window_end": None, "versions": {}}
    last_end = evidence["last_window_end"]
    if report.window_start < since - 1e-6 or (last_end is not None
                                               and report.window_end <= last_end):
        return evidence
    versions = {v: dict(f) for v, f in evidence["versions"].items()}
    for version, health in report.versions.items():
        figures = versions.setdefault(version, {"requests": 0, "errors": 0, "latencies_ms": {}})
        figures["requests"] += health.requests
        figures["errors"] += health.errors
        latencies = dict(figures["latencies_ms"])
        for value, count in health.latencies_ms:
            key = repr(float(value))
            latencies[key] = latencies.get(key, 0) + count
        figures["latencies_ms"] = latencies
    return {"last_window_end": report.window_end, "versions": versions}


def evidence_health(evidence: dict[str, Any] | None) -> dict[str, VersionHealth]:
    """The accumulated evidence as VersionHealth per version."""
    from shared.serving.base import VersionHealth

    versions = (evidence or {}).get("versions", {})
    return {v: VersionHealth(v, f["requests"], f["errors"],
                             tuple(sorted((float(k), c) for k, c in f["latencies_ms"].items())))
            for v, f in versions.items()}
