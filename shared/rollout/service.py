"""The rollout's imperative shell: load a record, ask the machine (and the judge), save with the
ETag it was read with, then carry out the effects waiting in the record's outbox.

Every save is a compare-and-set on the record's ETag: decisions (`_transact`), each effect taken
off the outbox (`_drain`) and the error notes. Side effects happen only after a save succeeded,
so of two hosts that judged the same state only the one whose save landed acts. Each effect is
idempotent at its target, so an outbox finished twice - by two hosts, or by a handler redone
after a crash between an effect and the save that drops it - changes nothing the second time:
- traffic: the endpoint's routes are read first, and a config that already holds is not sent
  again (a re-sent config would restart the endpoint's warm-up);
- aliases and version tags: written only where the registry differs (shared/registry/client.py);
  @challenger is never moved off a newer version (the stale version rule, machine.py); @shadow
  is removed only from the version it was set on;
- mirroring (the shadow step): the endpoint's shadow version is read first and set only where
  it differs;
- events: ids derived from the transition (`Emit.key`), so the router drops a repeat.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.events import TickDue
from shared.foundation.failpoints import failpoint
from shared.foundation.fanout import Send, TickMarks, fan_out
from shared.foundation.http import Reply, error_reply
from shared.foundation.queues import RAMP_TICKS
from shared.foundation.state import ConcurrencyConflict
from shared.foundation.storage import DEFAULT_FUNCTION_TIMEOUT, app_function_timeout
from shared.registry.versions import is_newer
from shared.rollout import machine
from shared.rollout.judge import Verdict, Window, judge
from shared.rollout.machine import (
    ApplyTraffic,
    DropShadowAlias,
    Emit,
    EndpointRecord,
    MirrorTraffic,
    Phase,
    PromoteAliases,
    RecordOnVersion,
    Refused,
    RestoreAliases,
    SetChallengerAlias,
    SetShadowAlias,
)
from shared.rollout.policy import RolloutPolicy
from shared.rollout.quality import PredictionComparison, compare_records
from shared.rollout.shadow import judge_shadow
from shared.rollout.store import Loaded, RolloutStore
from shared.rollout.warmup import sample_from
from shared.serving.base import EndpointState, ServingBackend, ServingError, VersionHealth

if TYPE_CHECKING:
    from shared.monitoring.reference import ReferenceDistribution, ReferenceStore

    References = Callable[[str, str], ReferenceDistribution | None]
    RecentRequests = Callable[[str, int], list[dict]]

log = logging.getLogger("gatehouse.rollout")
SOURCE = "/gatehouse/rollout"
ROLLBACK_GRACE_SECONDS = 60.0   # open_rollback gets this long before a ramp tick finishes it
SAVE_ATTEMPTS = 5
MAX_QUALITY_RECORDS = 20_000    # payload records read per look to compare the predictions
MAX_ACTOR, MAX_REASON = 200, 2000


class RollbackAsk(BaseModel):
    """The body of POST /api/rollouts/{endpoint}/rollback: who asks for the rollback, and why."""

    EXPECTED: ClassVar[str] = '{"actor": "who", "reason": "why"}'
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)

    actor: str = Field(min_length=1, max_length=MAX_ACTOR)
    reason: str = Field(min_length=1, max_length=MAX_REASON)


def no_rollout(endpoint: str) -> Reply:
    return error_reply(404, f"no rollout has ever run on endpoint {endpoint!r}")


def registry_kind(model_name: str) -> str:
    return "unity-catalog" if model_name.count(".") == 2 else "mlflow"


class RolloutService:
    def __init__(self, store: RolloutStore, backend: ServingBackend, registry, bus,
                 policy_for: Callable[[str], RolloutPolicy], clock: Callable[[], float] = time.time,
                 traffic_wait_seconds: float = 240.0, references: References | None = None,
                 recent_requests: RecentRequests | None = None):
        self.store, self.backend, self.registry, self.bus = store, backend, registry, bus
        self.policy_for, self.clock = policy_for, clock
        self.references = references  # (model, version) -> its monitoring reference
        # (endpoint, limit) -> recent request bodies where the backend keeps no payload log
        # (Databricks: the inference table), for the replay
        self.recent_requests = recent_requests
        self.traffic_wait_seconds = traffic_wait_seconds
        self.drain_lease = app_function_timeout() or DEFAULT_FUNCTION_TIMEOUT

    # -- saving and acting ---------------------------------------------------------------------

    def _transact(self, endpoint: str, decide: Callable[[Loaded], machine.Step | None]) -> Loaded:
        """Load, decide, save; on a concurrent save, decide again on the fresh state."""
        for _ in range(SAVE_ATTEMPTS):
            loaded = self.store.load(endpoint)
            step = decide(loaded)
            if step is None:
                return loaded
            try:
                saved = self.store.save(loaded, step.record, step.transitions)
            except ConcurrencyConflict:
                continue
            failpoint("rollout.saved")
            for transition in step.transitions:
                log.info("%s: %s v%s %s -> %s by %s: %s", endpoint, transition.rollout_id,
                         transition.version, transition.from_phase and transition.from_phase.value,
                         transition.to_phase.value, transition.actor, transition.reason)
            return saved
        raise ConcurrencyConflict(f"{endpoint}: state kept changing under {SAVE_ATTEMPTS} attempts")

    def _drain(self, loaded: Loaded) -> Loaded:
        """Carry out the outbox, saving after each effect, under a lease on the record (one
        function timeout: a drainer killed mid-way holds it no longer than its message stays
        invisible). Stops quietly if another worker holds the lease or saved meanwhile: it is
        finishing the same outbox. A failure gives the lease back before it propagates."""
        drainer = uuid.uuid4().hex
        try:
            while loaded.record is not None and loaded.record.outbox:
                record = loaded.record
                renew = record.drain_until - self.clock() < self.drain_lease / 2
                if record.drainer != drainer or renew:
                    leased = machine.lease_drain(record, drainer, self.clock(), self.drain_lease)
                    if leased is None:
                        return loaded
                    try:
                        loaded = self.store.save(loaded, leased)
                    except ConcurrencyConflict:
                        return self.store.load(leased.endpoint)
                    record = leased
                effect = record.outbox[0]
                updated = self._carry_out(record, effect)
                failpoint("rollout.action_done")
                try:
                    loaded = self.store.save(loaded, machine.drop_effect(updated, effect))
                except ConcurrencyConflict:
                    # Another step was saved meanwhile, with our lease copied into it: take the
                    # lease afresh and go on, or the outbox would wait for it to run out.
                    self._release_drain(record.endpoint, drainer)
                    loaded = self.store.load(record.endpoint)
                    continue  # the new step's effects (and this one, redone harmlessly)
                failpoint("rollout.action_cleared")
        except BaseException:
            if loaded.record is not None:
                self._release_drain(loaded.record.endpoint, drainer)
            raise
        return loaded

    def _release_drain(self, endpoint: str, drainer: str) -> None:
        """Give back the outbox lease after a failure, so a retry need not wait it out."""
        try:
            loaded = self.store.load(endpoint)
            if loaded.record is not None and loaded.record.drainer == drainer:
                self.store.save(loaded, loaded.record.model_copy(
                    update={"drainer": None, "drain_until": 0.0}))
        except Exception:  # taken over, or storage down: the lease runs out by itself
            log.info("%s: could not give back the outbox lease", endpoint)

    def _carry_out(self, record: EndpointRecord, effect) -> EndpointRecord:
        model = record.model_name
        if isinstance(effect, ApplyTraffic):
            state = self._serve(record.endpoint, model, effect.routes)
            if state.updating or state.routes != effect.routes:
                raise ServingError(f"{record.endpoint}: still updating towards {effect.routes} "
                                   f"(serves {state.routes}); will check again")
            return machine.traffic_applied(
                record, effect.routes, config_updated_at=state.config_updated_at,
                warmup_seconds=self.policy_for(model).warmup_seconds, now=self.clock())
        if isinstance(effect, MirrorTraffic):
            self._mirror(record.endpoint, model, effect.version)
            return machine.mirror_applied(record, effect.version, now=self.clock())
        if isinstance(effect, SetChallengerAlias):
            self._set_challenger(model, effect.version)
        elif isinstance(effect, SetShadowAlias):
            self.registry.set_alias(model, "shadow", effect.version)
        elif isinstance(effect, DropShadowAlias):
            self._drop_alias(model, "shadow", effect.version)
        elif isinstance(effect, PromoteAliases):
            self._promote_aliases(model, effect)
        elif isinstance(effect, RestoreAliases):
            self._restore_aliases(model, effect)
        elif isinstance(effect, RecordOnVersion):
            self.registry.set_version_tags(model, effect.version, effect.tags)
        elif isinstance(effect, Emit):
            self._emit(effect)
        return record

    def _serve(self, endpoint: str, model: str, routes: dict[str, int]) -> EndpointState:
        """The endpoint serving `routes`: the config is sent only when it does not hold yet."""
        state = self.backend.state(endpoint)
        if (state is not None and state.routes == routes and state.ready and not state.updating
                and state.model_name in (None, model)):
            return state
        return self.backend.set_traffic(endpoint, model, routes,
                                        wait_seconds=self.traffic_wait_seconds)

    def _mirror(self, endpoint: str, model: str, version: str | None) -> None:
        """The endpoint mirroring to `version` (None: not mirroring); sent only if it differs."""
        state = self.backend.state(endpoint)
        if state is not None and state.shadow == version:
            return
        if version is None and not self.backend.mirrors:
            return  # a backend that cannot mirror mirrors nothing
        self.backend.set_shadow(endpoint, model, version)

    def _drop_alias(self, model: str, alias: str, version: str) -> None:
        current = self.registry.version_by_alias(model, alias)
        if current is not None and current.version == version:
            self.registry.delete_alias(model, alias)

    def _set_challenger(self, model: str, version: str) -> None:
        """@challenger on `version`, unless it points at a newer version (which stays)."""
        current = self.registry.version_by_alias(model, "challenger")
        if current is not None and is_newer(current.version, version):
            log.info("%s: @challenger stays on v%s, newer than v%s", model, current.version,
                     version)
            return
        self.registry.set_alias(model, "challenger", version)

    def _promote_aliases(self, model: str, effect: PromoteAliases) -> None:
        self.registry.set_alias(model, "champion", effect.version)
        challenger = self.registry.version_by_alias(model, "challenger")
        if challenger is not None and challenger.version == effect.version:
            self.registry.delete_alias(model, "challenger")
        self._legacy_stage(model, effect.version, "Production")
        if effect.previous:
            self._archive(model, effect.previous, superseded_by=effect.version)
            self._legacy_stage(model, effect.previous, "Archived")

    def _archive(self, model: str, version: str, *, superseded_by: str) -> None:
        """Tag the previous champion archived, once: a redo finds it archived by the same
        promotion and leaves the time it was archived at as it is."""
        tags = self.registry.version(model, version).tags
        if tags.get("gatehouse.archived") == "true" and \
                tags.get("gatehouse.superseded_by") == superseded_by:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))
        self.registry.set_version_tags(model, version, {
            "gatehouse.archived": "true", "gatehouse.archived_at": now,
            "gatehouse.superseded_by": superseded_by})

    def _restore_aliases(self, model: str, effect: RestoreAliases) -> None:
        if effect.restored:
            self.registry.set_alias(model, "champion", effect.restored)
        challenger = self.registry.version_by_alias(model, "challenger")
        if challenger is not None and challenger.version == effect.version:
            self.registry.delete_alias(model, "challenger")
        self.registry.set_version_tags(model, effect.version, {"gatehouse.rolled_back": "true"})
        if effect.was_promoted and effect.restored:
            self.registry.set_version_tags(model, effect.restored, {"gatehouse.archived": "false"})
            self._legacy_stage(model, effect.restored, "Production")
            self._legacy_stage(model, effect.version, "Archived")

    def _legacy_stage(self, model: str, version: str, stage: str) -> None:
        """Workspace registries still have stages; Unity Catalog has none (aliases only)."""
        if registry_kind(model) == "unity-catalog":
            return
        info = self.registry.version(model, version)
        if info.stage is None or info.stage == stage:
            return
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.registry.client.transition_model_version_stage(model, version, stage)

    def _emit(self, effect: Emit) -> None:
        from shared.events import EVENT_CLASSES, Envelope, kind_of

        # The payload class of the effect's kind, as the discriminated EventData union picks it.
        # (Not TypeAdapter(EventData): mypy reads that as an error once shared.events comes from
        # its incremental cache.)
        payload_class = next((c for c in EVENT_CLASSES if kind_of(c) == effect.kind), None)
        if payload_class is None:
            raise ValueError(f"{effect.kind!r} is no event kind of shared.events")
        data = payload_class.model_validate({
            "kind": effect.kind, "registry": registry_kind(effect.payload["model_name"]),
            **effect.payload})
        self.bus.publish(Envelope.wrap(data, source=SOURCE, dedupe_key=effect.key))

    # -- starting ------------------------------------------------------------------------------

    def _current_champion(self, model: str, endpoint: str) -> str | None:
        info = self.registry.version_by_alias(model, "champion")
        if info is not None:
            return info.version
        state = self.backend.state(endpoint)
        if state is not None and state.model_name in (None, model):
            serving = [v for v, p in state.routes.items() if p == 100]
            return serving[0] if serving else None
        return None

    def start(self, model: str, version: str, *, actor: str, reason: str,
              source_event_id: str | None = None) -> dict:
        """A version passed its gates: start, queue or refuse its rollout."""
        policy = self.policy_for(model)
        endpoint = policy.endpoint_for(model)
        champion = None
        if self.store.load(endpoint).record is None:
            champion = self._current_champion(model, endpoint)

        decided: list[machine.Step] = []

        def decide(loaded: Loaded):
            decided[:] = [machine.start(loaded.record, model_name=model, endpoint=endpoint,
                                        version=version, champion=champion, policy=policy,
                                        now=self.clock(), actor=actor, reason=reason,
                                        source_event_id=source_event_id)]
            return decided[0]

        result: dict = {}
        try:
            loaded = self._transact(endpoint, decide)
        except Refused as refused:
            log.info("start of %s v%s refused: %s", model, version, refused)
            result["refused"] = str(refused)
            loaded = self.store.load(endpoint)
        else:
            superseded = [t for t in decided[0].transitions if t.action == machine.SUPERSEDED]
            if superseded:
                log.warning("start of %s v%s refused: %s", model, version,
                            superseded[0].reason)
                result.update(refused=superseded[0].reason, superseded=True)
        if loaded.record is None:
            return {"endpoint": endpoint, **result}
        try:
            return {**self._begin_if_pending(self._drain(loaded)), **result}
        except ServingError as exc:
            # The decision is saved with its effects in the outbox: the next ramp tick
            # finishes them. Nothing is lost by answering the queue message now.
            log.warning("%s: serving backend failed; the ramp tick will retry: %s", endpoint, exc)
            self._note_error(endpoint, str(exc))
            return {"endpoint": endpoint, "error": str(exc), **result}

    def _begin_if_pending(self, loaded: Loaded) -> dict:
        record = loaded.existing()
        if record.active is None or record.active.phase is not Phase.PENDING:
            return self.describe(record)
        active = record.active
        policy = self.policy_for(record.model_name)
        shadow = policy.shadow_step and self.backend.mirrors
        if shadow:
            ok, detail = True, f"{self.backend.name} serving mirrors live traffic"
        else:
            ok, detail = self._replay(record.endpoint, record.model_name, active.challenger,
                                      policy)

        def decide(current: Loaded) -> machine.Step | None:
            now_record = current.record
            now_active = now_record.active if now_record else None
            if (now_record is None or now_active is None or now_active.id != active.id
                    or now_active.phase is not Phase.PENDING):
                return None
            return machine.begin(now_record, policy=policy, replay_ok=ok, replay_detail=detail,
                                 now=self.clock(), shadow=shadow)

        return self.describe(self._drain(self._transact(record.endpoint, decide)).record)

    def _replay(self, endpoint: str, model: str, version: str,
                policy: RolloutPolicy) -> tuple[bool, str]:
        from shared.rollout.replay import replay

        if policy.replay_sample_size == 0:
            return True, "replay disabled by policy"
        try:
            payloads = self.backend.recent_payloads(endpoint, policy.replay_sample_size)
            if not payloads and self.recent_requests is not None:
                payloads = self.recent_requests(endpoint, policy.replay_sample_size)
        except ServingError as exc:
            payloads = []
            log.warning("%s: no payloads to replay: %s", endpoint, exc)
        if not payloads:
            return True, "no recent live payloads to replay"
        try:
            model_object = self.registry.load_pyfunc(model, version)
        except Exception as exc:
            return False, f"v{version} does not load: {type(exc).__name__}: {exc}"
        outcome = replay(payloads, model_object)
        return outcome.ok, outcome.detail

    # -- ramping -------------------------------------------------------------------------------

    def ramp(self, endpoint: str | None = None) -> list[dict]:
        endpoints = [endpoint] if endpoint else [r.endpoint for r in self.store.records()]
        results = []
        for name in endpoints:
            try:
                results.append(self.tick(name))
            except Exception as exc:  # one endpoint's trouble must not stop the others
                log.exception("%s: ramp tick failed", name)
                results.append({"endpoint": name, "error": f"{type(exc).__name__}: {exc}"})
                self._note_error(name, f"{type(exc).__name__}: {exc}")
        return results

    def due(self) -> list[str]:
        """The endpoints a ramp tick has work on: an active rollout, effects waiting in the
        outbox, or a previous champion to stop serving."""
        now = self.clock()
        return [record.endpoint for record in self.store.records()
                if record.active is not None or record.outbox
                or machine.retire_previous(record, policy=self.policy_for(record.model_name),
                                           now=now) is not None]

    def enqueue_ticks(self, now: float, period: float, marks: TickMarks, send: Send) -> list[str]:
        """The ramp timer's round: one tick per endpoint due, on the ramp-ticks queue."""
        return fan_out("ramp", RAMP_TICKS, self.due(), now, period, marks, send)

    def ramp_now(self, endpoint: str) -> Reply:
        """One endpoint's ramp tick on request: 200 with its state, 502 if serving failed."""
        if self.store.load(endpoint).record is None:
            return no_rollout(endpoint)
        result = self.ramp(endpoint)[0]
        return Reply(502 if "error" in result else 200, result)

    def _note_error(self, endpoint: str, error: str) -> None:
        loaded = self.store.load(endpoint)
        if loaded.record is not None and loaded.record.active is not None:
            try:
                self.store.save(loaded, machine.note(loaded.record, error=error, now=self.clock()))
            except ConcurrencyConflict:
                pass

    def tick(self, endpoint: str) -> dict:
        loaded = self.store.load(endpoint)
        if loaded.record is None:
            return {"endpoint": endpoint, "status": "no rollout"}
        loaded = self._drain(loaded)
        record = loaded.existing()
        active = record.active
        policy = self.policy_for(record.model_name)
        now = self.clock()
        if active is None:
            def retire(current: Loaded) -> machine.Step | None:
                return machine.retire_previous(current.existing(), policy=policy,
                                               now=self.clock())

            if machine.retire_previous(record, policy=policy, now=now) is not None:
                loaded = self._drain(self._transact(endpoint, retire))
            return self.describe(loaded.record)
        if active.phase is Phase.PENDING:
            return self._begin_if_pending(loaded)
        if active.phase is Phase.ROLLING_BACK:
            if now - (active.rollback_requested_at or now) >= ROLLBACK_GRACE_SECONDS:
                return self.complete_rollback(endpoint, actor=machine.SERVICE)
            return self.describe(record)
        if active.phase is Phase.SHADOW:
            return self._judge_shadow(record, active, policy)
        if not active.routes_applied:
            return self.describe(record)
        return self._judge(record, active, policy)

    def _judge_shadow(self, record: EndpointRecord, active: machine.Rollout,
                      policy: RolloutPolicy) -> dict:
        """A look at the shadow step: the challenger's answers to mirrored requests against
        the champion's answers to the same requests."""
        if active.shadow_from is None:
            return self.describe(record)  # mirroring not on yet: the outbox is on it
        now = self.clock()
        comparison = self._predictions(record, active, active.shadow_from, mirrored=True)
        verdict = judge_shadow(policy, comparison, now=now, started=active.shadow_from)
        return self._decide(record, active, policy, verdict, now)

    def _judge(self, record: EndpointRecord, active: machine.Rollout,
               policy: RolloutPolicy) -> dict:
        now = self.clock()
        state = self.backend.state(record.endpoint)
        since = active.measure_from
        if state is not None and state.config_updated_at and since is not None:
            since = max(since, state.config_updated_at + policy.warmup_seconds)
        ready = (state is not None and state.ready and not state.updating
                 and state.routes == active.routes)
        detail = ("endpoint missing" if state is None else
                  f"serves {state.routes}, rollout expects {active.routes}"
                  if state.routes != active.routes else state.detail or "updating")
        if ready and active.warm_at is None and active.applied_at is not None \
                and policy.max_warmup_seconds > policy.warmup_seconds:
            return self._warm_up(record, active, policy, now)
        champion = challenger = None
        evidence = None
        if ready and since is not None and now >= since:
            report = self.backend.health(record.endpoint, since)
            if report.cumulative:
                versions = report.versions
            else:
                evidence = machine.accumulate(active.evidence, report, since)
                versions = machine.evidence_health(evidence)
            champion = _health_of(versions, active.champion)
            challenger = _health_of(versions, active.challenger)
        predictions = None
        if champion is not None and since is not None:
            predictions = self._predictions(record, active, since)
        window = Window(ready=ready, start=since or now, end=now, champion=champion,
                        challenger=challenger, detail=detail, predictions=predictions)
        verdict = judge(policy, window, now=now, measure_from=since,
                        extensions=active.extensions, step_percent=active.traffic_percent,
                        earlier_steps=active.earlier_steps)

        return self._decide(record, active, policy, verdict, now, evidence)

    def _decide(self, record: EndpointRecord, active: machine.Rollout, policy: RolloutPolicy,
                verdict: Verdict, now: float, evidence: dict | None = None) -> dict:
        """The verdict applied to the rollout as it was judged (unless someone else did)."""

        def decide(current: Loaded) -> machine.Step | None:
            now_record = current.record
            now_active = now_record.active if now_record else None
            if (now_record is None or now_active is None or now_active.id != active.id
                    or now_active != active):
                return None  # someone else judged this state already
            step = machine.judged(now_record, verdict, policy=policy, now=now)
            if evidence is not None and step.record.active is not None and \
                    step.record.active.step_index == active.step_index:
                step = step.model_copy(update={"record": machine.note(
                    step.record, now=now, evidence=evidence)})
            return step

        loaded = self._drain(self._transact(record.endpoint, decide))
        result = self.describe(loaded.record)
        result["verdict"] = verdict.summary()
        return result

    def _predictions(self, record: EndpointRecord, active: machine.Rollout, since: float,
                     *, mirrored: bool = False) -> PredictionComparison | None:
        """The two versions' answers since `since` from the payload log, compared on the
        champion's monitoring reference: the champion's served answers against the challenger's
        (served ones, or with `mirrored` the shadow's answers to the same requests)."""
        try:
            records = self.backend.records(record.endpoint, since, MAX_QUALITY_RECORDS)
        except ServingError as exc:
            log.warning("%s: no payload records to compare predictions: %s", record.endpoint, exc)
            return None
        champion = [r for r in records if r.version == active.champion and not r.shadow]
        challenger = [r for r in records if r.version == active.challenger
                      and r.shadow == mirrored]
        if not champion or not challenger:
            return None
        return compare_records(champion, challenger, self._reference(record.model_name, active))

    def _reference(self, model: str, active: machine.Rollout) -> ReferenceDistribution | None:
        """The champion's monitoring reference (the challenger's where it has none)."""
        if self.references is None:
            return None
        for version in (active.champion, active.challenger):
            if version is None:
                continue
            try:
                found = self.references(model, version)
            except Exception as exc:  # storage trouble: judged without PSI this look
                log.warning("%s v%s: reference not read: %s", model, version, exc)
                continue
            if found is not None:
                return found
        return None

    def _warm_up(self, record: EndpointRecord, active: machine.Rollout, policy: RolloutPolicy,
                 now: float) -> dict:
        """A warm-up look: both versions' latencies since the previous one, and the rule's say."""
        samples = (active.warmup or {}).get("samples") or []
        since = samples[-1][0] if samples else active.applied_at or now
        report = self.backend.health(record.endpoint, since)
        sample = sample_from(now, report.versions.get(active.challenger),
                             report.versions.get(active.champion or ""))

        def decide(current: Loaded) -> machine.Step | None:
            now_record = current.record
            if now_record is None or now_record.active != active:
                return None  # someone else looked at this state already
            return machine.Step(record=machine.warming(now_record, sample=sample, policy=policy,
                                                       now=now))

        loaded = self._transact(record.endpoint, decide)
        result = self.describe(loaded.record)
        warmed = loaded.record.active if loaded.record else None
        result["verdict"] = warmed.last_verdict if warmed else None
        return result

    # -- rolling back --------------------------------------------------------------------------

    def rollback_preview(self, endpoint: str, rollout_id: str) -> Reply:
        """What a rollback of `rollout_id` would undo now (200), or 404/409 saying why there is
        nothing to undo. Changes nothing."""
        record = self.store.load(endpoint).record
        if record is None:
            return no_rollout(endpoint)
        target = machine.rollback_target(record, self.policy_for(record.model_name), self.clock())
        if target is None:
            return error_reply(409, f"{endpoint}: nothing to roll back (no active rollout and no "
                                    f"promotion within the rollback window)")
        if target.id != rollout_id:
            return error_reply(409, f"rollout {rollout_id} is no longer the one to roll back "
                                    f"(now: {target.id} of v{target.challenger})")
        if target.phase is Phase.ROLLING_BACK:
            return error_reply(409, f"{endpoint}: rollout {target.id} is rolling back already")
        return Reply(200, {"endpoint": endpoint, "model_name": record.model_name,
                           "rollout_id": target.id, "version": target.challenger,
                           "restores": target.champion, "phase": target.phase.value})

    def request_rollback(self, endpoint: str, *, actor: str, reason: str,
                         version: str | None = None, rollout_id: str | None = None) -> Reply:
        """Ask for a rollback (a person, a link, monitoring): 202, or 404/409 saying why not."""

        def decide(loaded: Loaded):
            if loaded.record is None:
                raise Refused(f"no rollout has ever run on endpoint {endpoint!r}")
            policy = self.policy_for(loaded.record.model_name)
            target = machine.rollback_target(loaded.record, policy, self.clock())
            if target is not None and rollout_id is not None and target.id != rollout_id:
                raise Refused(f"rollout {rollout_id} is no longer the one to roll back "
                              f"(now: {target.id} of v{target.challenger})")
            if target is not None and version is not None and target.challenger != str(version):
                raise Refused(f"v{version} is not what a rollback would undo on {endpoint} "
                              f"(that is v{target.challenger})")
            return machine.request_rollback(loaded.record, actor=actor, reason=reason,
                                            now=self.clock(), policy=policy)

        if self.store.load(endpoint).record is None:
            return no_rollout(endpoint)
        try:
            loaded = self._transact(endpoint, decide)
        except Refused as refused:
            return error_reply(409, str(refused))
        try:
            loaded = self._drain(loaded)
        except Exception as exc:  # saved with its outbox: the next ramp tick announces it
            log.warning("%s: rollback requested; announcing it failed for now: %s", endpoint, exc)
        active = loaded.existing().active
        return Reply(202, {"status": "rollback requested", "endpoint": endpoint,
                           "rollout_id": active.id if active else None,
                           "version": active.challenger if active else None})

    def complete_rollback(self, endpoint: str, *, actor: str) -> dict:
        def decide(loaded: Loaded):
            record = loaded.record
            if record is None or record.active is None or \
                    record.active.phase is not Phase.ROLLING_BACK:
                return None  # done already (or never requested): rolling back twice is harmless
            return machine.complete_rollback(record, actor=actor, now=self.clock())

        return self.describe(self._drain(self._transact(endpoint, decide)).record)

    def open_rollback(self, endpoint: str, version: str, *, actor: str, reason: str) -> dict:
        """Handle a RollbackRequested from anyone: request it if nobody did yet, then do it."""
        loaded = self._drain(self.store.load(endpoint))
        active = loaded.record.active if loaded.record else None
        if active is None or active.phase is not Phase.ROLLING_BACK:
            requested = self.request_rollback(endpoint, actor=actor, reason=reason,
                                              version=version)
            if not requested.ok:
                log.info("rollback of %s v%s: %s", endpoint, version, requested.body["error"])
                return {"endpoint": endpoint, "status": "nothing to roll back",
                        "detail": requested.body["error"]}
        elif active.challenger != str(version):
            return {"endpoint": endpoint, "status": "nothing to roll back",
                    "detail": f"rolling back v{active.challenger}, not v{version}"}
        return self.complete_rollback(endpoint, actor=actor)

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def describe(record: EndpointRecord | None) -> dict:
        if record is None:
            return {}
        return {"endpoint": record.endpoint, "model_name": record.model_name,
                "champion": record.champion,
                "active": record.active.model_dump(mode="json") if record.active else None,
                "queued": record.queued.model_dump(mode="json") if record.queued else None,
                "last": record.last.model_dump(mode="json") if record.last else None,
                "pending_effects": len(record.outbox)}

    def overview(self) -> list[dict]:
        return [self.describe(record) for record in self.store.records()]

    def detail(self, endpoint: str) -> dict | None:
        record = self.store.load(endpoint).record
        if record is None:
            return None
        return {**self.describe(record),
                "history": [t.model_dump(mode="json") for t in self.store.history(endpoint)]}


def _health_of(versions: dict[str, VersionHealth], version: str | None) -> VersionHealth:
    """A version's figures in the window; none measured (or no champion): zero requests."""
    found = versions.get(version) if version is not None else None
    return found or VersionHealth(version or "", 0, 0)


@lru_cache(maxsize=4)
def _store(connection_string: str) -> RolloutStore:
    return RolloutStore.connect(connection_string)


@lru_cache(maxsize=4)
def _references(connection_string: str) -> ReferenceStore:
    from shared.monitoring.reference import ReferenceStore

    return ReferenceStore.connect(connection_string)


def from_runtime() -> RolloutService:
    """The service as the Function App's handlers use it, built from the settings."""
    from shared.foundation import runtime
    from shared.monitoring.adapters import recent_requests
    from shared.policy import current_policy
    from shared.registry.client import Registry
    from shared.serving.factory import serving_backend

    connection = runtime.storage_connection()
    return RolloutService(_store(connection), serving_backend(), Registry(), runtime.bus(),
                          lambda model: current_policy().for_model(model).rollout,
                          references=_references(connection).load,
                          recent_requests=recent_requests(runtime.settings()))


def ramp_one(due: TickDue) -> dict:
    """A ramp tick from the queue: one endpoint's tick (its trouble is noted on its record, as
    the ramp does, and the next tick tries again)."""
    result = from_runtime().ramp(due.endpoint)[0]
    log.info("ramp: %s", json.dumps(result, default=str)[:2000])
    return result
