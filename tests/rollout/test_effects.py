"""The rollout's effects happen once at their targets however a handler is cut short: killed at
any failpoint and redone from the start, a start or a rollback leaves one config change, one
alias move, one history row and one event id of each kind. And the stale version rule: a version
never displaces a newer one. Records on Azurite; serving, registry and bus are in-memory
stand-ins that count what reaches them."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from shared.events import Envelope
from shared.foundation.failpoints import ENVIRONMENT, FailpointError
from shared.foundation.handling import process_once
from shared.foundation.idempotency import IdempotencyStore
from shared.foundation.state import MemoryTable
from shared.registry.client import VersionInfo
from shared.rollout import machine
from shared.rollout import service as service_module
from shared.rollout.machine import EndpointRecord, Phase, new_rollout
from shared.rollout.policy import RolloutPolicy
from shared.rollout.service import RolloutService
from shared.rollout.store import Loaded, RolloutStore, RolloutTable
from shared.serving.base import EndpointState, HealthReport, ServingBackend

MODEL = "fraud"
CANARY = RolloutPolicy(steps=(5, 100), replay_sample_size=0, warmup_seconds=0,
                       max_warmup_seconds=0)
STRAIGHT_TO_100 = RolloutPolicy(steps=(100,), replay_sample_size=0, warmup_seconds=0)


class Serving(ServingBackend):
    """One endpoint's routes, and every config sent to it."""

    def __init__(self, routes: dict[str, int]):
        self.routes = dict(routes)
        self.configs: list[dict[str, int]] = []

    def state(self, endpoint):
        return EndpointState(endpoint, MODEL, dict(self.routes), ready=True, updating=False,
                             config_updated_at=1.0)

    def set_traffic(self, endpoint, model_name, routes, wait_seconds=1200.0):
        self.configs.append(dict(routes))
        self.routes = dict(routes)
        return self.state(endpoint)

    def wait_ready(self, endpoint, timeout=1200.0):
        return self.state(endpoint)

    def health(self, endpoint, since):
        return HealthReport(endpoint, since, since)


class MirroringServing(Serving):
    """Serving that can mirror (the shadow step), counting every shadow change sent."""

    mirrors = True

    def __init__(self, routes: dict[str, int]):
        super().__init__(routes)
        self.shadow: str | None = None
        self.shadows: list[str | None] = []

    def state(self, endpoint):
        return replace(super().state(endpoint), shadow=self.shadow)

    def set_shadow(self, endpoint, model_name, version):
        self.shadows.append(version)
        self.shadow = version
        return self.state(endpoint)


class Registry:
    """The registry adapter's contract (writes only where it differs), counting the writes."""

    def __init__(self, versions: int, aliases: dict[str, str]):
        self.tags: dict[str, dict[str, str]] = {str(v): {} for v in range(1, versions + 1)}
        self.aliases = dict(aliases)
        self.alias_writes: list[tuple[str, str | None]] = []
        self.tag_writes: list[tuple[str, str, str]] = []

    def version(self, model, version):
        return VersionInfo(model, str(version), None, None, dict(self.tags[str(version)]))

    def version_by_alias(self, model, alias):
        version = self.aliases.get(alias)
        return self.version(model, version) if version else None

    def set_alias(self, model, alias, version):
        if self.aliases.get(alias) == str(version):
            return False
        self.aliases[alias] = str(version)
        self.alias_writes.append((alias, str(version)))
        return True

    def delete_alias(self, model, alias):
        if self.aliases.pop(alias, None) is not None:
            self.alias_writes.append((alias, None))

    def set_version_tags(self, model, version, tags):
        current = self.tags[str(version)]
        changed = {k: str(v) for k, v in tags.items() if current.get(k) != str(v)}
        current.update(changed)
        self.tag_writes.extend((str(version), k, v) for k, v in changed.items())
        return changed


class Bus:
    def __init__(self):
        self.published: list[Envelope] = []

    def publish(self, envelope):
        self.published.append(envelope)


class World:
    """An endpoint serving v1 (the champion), its record on Azurite, and the service."""

    def __init__(self, storage: str, policy: RolloutPolicy, versions: int = 8,
                 serving: type[Serving] = Serving):
        self.endpoint = f"ep-{uuid.uuid4().hex[:10]}"
        self.store = RolloutStore(RolloutTable(storage, f"fx{uuid.uuid4().hex[:12]}"))
        self.serving = serving({"1": 100})
        self.registry = Registry(versions, {"champion": "1"})
        self.bus = Bus()
        self.idempotency = IdempotencyStore(MemoryTable())
        self.now = 1_000.0
        self.service = RolloutService(self.store, self.serving, self.registry, self.bus,
                                      lambda model: policy.model_copy(
                                          update={"endpoint": self.endpoint}),
                                      clock=lambda: self.now)

    def start(self, version: str, event_id: str) -> dict:
        """The start_canary handler: the start, once per GatesPassed event id."""
        return process_once(self.idempotency, "start_canary", event_id, lambda: self.service.start(
            MODEL, version, actor="gatehouse", reason="gates passed", source_event_id=event_id))

    def open_rollback(self, version: str, event_id: str) -> dict:
        """The open_rollback handler, once per RollbackRequested event id."""
        return process_once(self.idempotency, "open_rollback", event_id,
                            lambda: self.service.open_rollback(self.endpoint, version,
                                                               actor="oncall", reason="alert"))

    def record(self) -> EndpointRecord:
        return self.store.load(self.endpoint).existing()

    def history(self) -> list[tuple[str, str]]:
        return [(t.action, t.version) for t in self.store.history(self.endpoint)]

    def event_kinds(self) -> Counter:
        """Distinct event ids per kind: what the router lets through."""
        return Counter(kind for kind in {e.id: e.data.kind for e in self.bus.published}.values())


class CrashAt:
    """Stands in for `failpoint`: raises at the n-th time `name` is reached, as an armed
    `raise` failpoint would; records every point it passes."""

    def __init__(self, name: str | None = None, nth: int = 0):
        self.name, self.nth = name, nth
        self.passed: list[str] = []

    def __call__(self, name: str) -> None:
        self.passed.append(name)
        if name == self.name and self.passed.count(name) == self.nth:
            raise FailpointError(f"failpoint {name}")


def crash_points(storage, policy: RolloutPolicy, run: Callable[[World], object],
                 monkeypatch, serving: type[Serving] = Serving) -> list[tuple[str, int]]:
    """Every (failpoint, n-th time) a clean run of `run` passes."""
    recorder = CrashAt()
    monkeypatch.setattr(service_module, "failpoint", recorder)
    run(World(storage, policy, serving=serving))
    seen: Counter = Counter()
    points = []
    for name in recorder.passed:
        seen[name] += 1
        points.append((name, seen[name]))
    return points


def crash_then_redo(storage, policy, run: Callable[[World], object], point: tuple[str, int],
                    monkeypatch, serving: type[Serving] = Serving) -> World:
    world = World(storage, policy, serving=serving)
    crash = CrashAt(*point)
    monkeypatch.setattr(service_module, "failpoint", crash)
    try:
        run(world)
    except FailpointError:
        pass  # else the handler's own error handling took it (an outbox left for the next tick)
    assert crash.passed.count(point[0]) >= point[1], f"{point} was not reached"
    monkeypatch.setattr(service_module, "failpoint", CrashAt())
    world.now += 60
    run(world)  # the queue redelivers the same message; its claim was released
    return world


def start_v2(world: World) -> dict:
    return world.start("2", "gates-passed-v2")


def test_a_start_cut_short_at_any_failpoint_and_redone_acts_once(storage, monkeypatch):
    points = crash_points(storage, CANARY, start_v2, monkeypatch)
    assert {name for name, _ in points} == {"rollout.saved", "rollout.action_done",
                                            "rollout.action_cleared"}
    for point in points:
        world = crash_then_redo(storage, CANARY, start_v2, point, monkeypatch)
        record = world.record()
        assert record.active.phase is Phase.CANARY and record.outbox == (), point
        assert world.serving.configs == [{"1": 95, "2": 5}], point
        assert world.registry.alias_writes == [("challenger", "2")], point
        assert world.history() == [("create", "2"), ("canary", "2")], point
        assert world.event_kinds() == {"rollout.canary_started": 1}, point
        assert len(world.registry.tag_writes) == len(set(world.registry.tag_writes)), point


def test_a_promotion_cut_short_at_any_failpoint_and_redone_acts_once(storage, monkeypatch):
    points = crash_points(storage, STRAIGHT_TO_100, start_v2, monkeypatch)
    for point in points:
        world = crash_then_redo(storage, STRAIGHT_TO_100, start_v2, point, monkeypatch)
        assert world.record().champion == "2" and world.record().outbox == (), point
        assert world.serving.configs == [{"2": 100, "1": 0}], point
        assert world.registry.aliases == {"champion": "2"}, point
        assert Counter(world.registry.alias_writes) == {("challenger", "2"): 1,
                                                        ("champion", "2"): 1,
                                                        ("challenger", None): 1}, point
        archived = [w[1] for w in world.registry.tag_writes if w[0] == "1"]
        assert sorted(archived) == ["gatehouse.archived", "gatehouse.archived_at",
                                    "gatehouse.superseded_by"], point
        assert world.event_kinds() == {"rollout.traffic_ramped": 1, "rollout.promoted": 1}, point


def test_a_rollback_cut_short_at_any_failpoint_and_redone_acts_once(storage, monkeypatch):
    def canary_then_rollback(world: World) -> dict:
        start_v2(world)  # a message already processed is skipped (its claim is completed)
        return world.open_rollback("2", "rollback-requested-v2")

    points = crash_points(storage, CANARY, canary_then_rollback, monkeypatch)
    for point in points:
        world = crash_then_redo(storage, CANARY, canary_then_rollback, point, monkeypatch)
        record = world.record()
        assert record.active is None and record.last.phase is Phase.ROLLED_BACK, point
        assert world.serving.configs == [{"1": 95, "2": 5}, {"1": 100}], point
        assert world.registry.aliases == {"champion": "1"}, point
        assert world.history().count(("rolled_back", "2")) == 1, point
        assert world.history().count(("rollback_requested", "2")) == 1, point
        assert world.event_kinds() == {"rollout.canary_started": 1,
                                       "rollout.rollback_requested": 1,
                                       "rollout.rollback_completed": 1}, point


def test_a_shadow_step_cut_short_at_any_failpoint_and_redone_mirrors_once(storage,
                                                                          monkeypatch):
    """Into the shadow step and rolled back out of it: one mirror on and off, @shadow set and
    removed once, never any traffic to v2."""
    shadow = CANARY.model_copy(update={"shadow_step": True})

    def shadow_then_rollback(world: World) -> dict:
        start_v2(world)
        return world.open_rollback("2", "rollback-requested-v2")

    points = crash_points(storage, shadow, shadow_then_rollback, monkeypatch,
                          serving=MirroringServing)
    for point in points:
        world = crash_then_redo(storage, shadow, shadow_then_rollback, point, monkeypatch,
                                serving=MirroringServing)
        record = world.record()
        assert record.active is None and record.last.phase is Phase.ROLLED_BACK, point
        assert not record.last.mirroring and record.outbox == (), point
        assert world.serving.shadows == ["2", None], point
        assert world.serving.configs == [], point   # v1 served 100% throughout: nothing sent
        assert Counter(world.registry.alias_writes) == {("challenger", "2"): 1,
                                                        ("shadow", "2"): 1,
                                                        ("shadow", None): 1,
                                                        ("challenger", None): 1}, point
        assert world.history() == [("create", "2"), ("shadow", "2"),
                                   ("rollback_requested", "2"), ("rolled_back", "2")], point
        assert world.event_kinds() == {"rollout.rollback_requested": 1,
                                       "rollout.rollback_completed": 1}, point


def test_an_armed_failpoint_ends_the_start_and_the_redelivery_finishes_it(storage, monkeypatch):
    world = World(storage, CANARY)
    monkeypatch.setenv(ENVIRONMENT, "rollout.action_done=raise")
    with pytest.raises(FailpointError):
        start_v2(world)
    assert world.record().outbox, "the effects wait in the outbox"
    monkeypatch.delenv(ENVIRONMENT)
    result = start_v2(world)
    assert "decided already" in result["refused"]
    assert world.record().active.phase is Phase.CANARY
    assert world.serving.configs == [{"1": 95, "2": 5}]
    assert world.registry.alias_writes == [("challenger", "2")]


def test_a_config_that_already_holds_is_not_sent_again(storage):
    world = World(storage, CANARY)
    world.serving.routes = {"1": 95, "2": 5}  # applied before a crash took the record's save
    start_v2(world)
    assert world.serving.configs == []
    assert world.record().active.routes_applied


# ---- the stale version rule ----

def queued_behind(world: World, champion: str, active: str, queued: str) -> None:
    """The endpoint's record: `active` on canary against `champion`, `queued` waiting."""
    canary = new_rollout(MODEL, world.endpoint, active, champion, Phase.CANARY, 0.0)
    canary = canary.model_copy(update={"routes": {champion: 95, active: 5}, "step_index": 0,
                                       "routes_applied": True})
    waiting = new_rollout(MODEL, world.endpoint, queued, champion, Phase.QUEUED, 0.0)
    world.store.save(Loaded(None, None), EndpointRecord(
        endpoint=world.endpoint, model_name=MODEL, champion=champion, active=canary,
        queued=waiting, seq=2))
    world.serving.routes = {champion: 95, active: 5}
    world.registry.aliases = {"champion": champion, "challenger": queued}


def test_an_old_version_passing_late_never_displaces_a_newer_one(storage):
    # v1 passes its gates late (a redelivery delayed by a crash) after v3 became champion,
    # while v5 is on canary and v7 waits.
    world = World(storage, CANARY)
    queued_behind(world, champion="3", active="5", queued="7")
    result = world.start("1", "late-gates-passed-v1")
    assert result["superseded"] is True
    assert "v3 (the champion) is newer than v1" in result["refused"]
    record = world.record()
    assert record.queued.challenger == "7" and record.active.challenger == "5"
    assert record.champion == "3"
    [(transition)] = world.store.history(world.endpoint)
    assert (transition.action, transition.version, transition.to_phase) == (
        "superseded", "1", Phase.ABORTED)
    assert world.registry.tags["1"]["gatehouse.rollout.last_action"] == "superseded"
    assert world.serving.configs == [] and world.bus.published == []
    assert world.registry.aliases == {"champion": "3", "challenger": "7"}

    # v6 is newer than the champion and the canary, but older than the queued v7: refused too.
    assert "v7 (the queued challenger) is newer than v6" in world.start("6", "e-v6")["refused"]
    assert world.record().queued.challenger == "7"

    # The same late event delivered again (its claim expired): decided already, nothing added.
    world.idempotency = IdempotencyStore(MemoryTable())
    again = world.start("1", "late-gates-passed-v1")
    assert "decided already" in again["refused"]
    assert [t.version for t in world.store.history(world.endpoint)] == ["1", "6"]


def test_a_newer_version_still_takes_the_queue(storage):
    world = World(storage, CANARY)
    queued_behind(world, champion="3", active="5", queued="7")
    world.start("8", "e-v8")
    assert world.record().queued.challenger == "8"
    assert machine.stale_reason(world.record(), "8") is None


def test_the_canary_never_moves_challenger_off_a_newer_version(storage):
    world = World(storage, CANARY)
    world.registry.aliases = {"champion": "1", "challenger": "4"}  # v4 passed its gates since
    world.start("2", "e-v2")
    assert world.record().active.phase is Phase.CANARY
    assert world.registry.aliases["challenger"] == "4"


def test_a_first_champion_named_by_the_gates_is_served(storage):
    # first_version_becomes_champion set @champion on v1; nothing serves the endpoint yet.
    world = World(storage, CANARY)
    world.serving.routes = {}
    result = world.start("1", "gates-passed-v1")
    assert "refused" not in result
    assert world.serving.configs == [{"1": 100}] and world.serving.routes == {"1": 100}
    assert world.record().champion == "1" and world.record().active is None
    assert world.history() == [("bootstrap", "1")]
    assert world.registry.aliases == {"champion": "1"}
