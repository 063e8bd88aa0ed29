"""Rollout records on Azurite: ETag concurrency, history written with the decision, links once."""

from __future__ import annotations

import threading
import uuid

import pytest

from shared.foundation.state import ConcurrencyConflict
from shared.rollout import machine
from shared.rollout.judge import Action, Verdict
from shared.rollout.policy import RolloutPolicy
from shared.rollout.store import Loaded, RolloutStore, RolloutTable

POLICY = RolloutPolicy(steps=(5, 50, 100))


@pytest.fixture
def store(storage):
    return RolloutStore(RolloutTable(storage, f"rollouts{uuid.uuid4().hex[:12]}"))


def canary(store: RolloutStore, endpoint: str) -> Loaded:
    step = machine.start(None, model_name="fraud", endpoint=endpoint, version="2", champion="1",
                         policy=POLICY, now=0, actor="gates", reason="passed")
    loaded = store.save(Loaded(None, None), step.record, step.transitions)
    step = machine.begin(loaded.record, policy=POLICY, replay_ok=True, replay_detail="ok", now=1)
    loaded = store.save(loaded, step.record, step.transitions)
    record = machine.traffic_applied(loaded.record, loaded.record.active.routes,
                                     config_updated_at=1, warmup_seconds=0, now=1)
    return store.save(loaded, record)


def advance(record):
    return machine.judged(record, Verdict(Action.ADVANCE, "healthy", {"n": 1.0}),
                          policy=POLICY, now=100)


def test_records_round_trip_with_their_history(store):
    loaded = canary(store, "fraud-a")
    again = store.load("fraud-a")
    assert again.record == loaded.record and again.etag == loaded.etag
    history = store.history("fraud-a")
    assert [(t.seq, t.action) for t in history] == [(1, "create"), (2, "canary")]
    assert store.history("fraud-a", rollout_id="nope") == []
    assert [r.endpoint for r in store.records()] == ["fraud-a"]


def test_two_hosts_cannot_both_advance_one_rollout(store):
    canary(store, "fraud-b")
    host_a, host_b = store.load("fraud-b"), store.load("fraud-b")
    barrier = threading.Barrier(2)
    outcomes = []

    def host(loaded):
        step = advance(loaded.record)
        barrier.wait()
        try:
            store.save(loaded, step.record, step.transitions)
            outcomes.append("saved")
        except ConcurrencyConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=host, args=(h,)) for h in (host_a, host_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "saved"]
    final = store.load("fraud-b").record
    assert final.active.traffic_percent == 50 and final.seq == 3
    # The loser's transition did not reach the history either: decision and history are atomic.
    assert [t.action for t in store.history("fraud-b")] == ["create", "canary", "advance"]


def test_two_hosts_cannot_both_create_the_first_rollout(store):
    steps = [machine.start(None, model_name="fraud", endpoint="fraud-c", version=v,
                           champion="1", policy=POLICY, now=0, actor="gates", reason="passed")
             for v in ("2", "3")]
    store.save(Loaded(None, None), steps[0].record, steps[0].transitions)
    with pytest.raises(ConcurrencyConflict):
        store.save(Loaded(None, None), steps[1].record, steps[1].transitions)
    assert store.load("fraud-c").record.active.challenger == "2"


def test_a_stale_etag_is_refused_even_without_history(store):
    loaded = canary(store, "fraud-d")
    store.save(loaded, machine.note(loaded.record, now=5, error="x"))
    with pytest.raises(ConcurrencyConflict):
        store.save(loaded, machine.note(loaded.record, now=6, error="y"))


def test_use_once(store):
    assert store.use_once("rollback-link|nonce-1", {"endpoint": "fraud"}) is True
    assert store.use_once("rollback-link|nonce-1", {"endpoint": "fraud"}) is False
    assert store.use_once("rollback-link|nonce-2", {"endpoint": "fraud"}) is True
