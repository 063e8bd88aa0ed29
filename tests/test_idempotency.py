"""Idempotency records: the pure verdicts, and the real thing on Azurite's Table service."""

from __future__ import annotations

import threading
import uuid

import pytest

from shared.foundation.handling import process_once
from shared.foundation.idempotency import (
    COMPLETED,
    IN_PROGRESS,
    AlreadyCompleted,
    AlreadyInProgress,
    IdempotencyStore,
    Verdict,
    judge_record,
)
from shared.foundation.state import ConcurrencyConflict, StateTable


@pytest.mark.parametrize("record,verdict", [
    (None, Verdict.TAKE),
    ({"status": COMPLETED, "expires_at": 200}, Verdict.DUPLICATE),
    ({"status": COMPLETED, "expires_at": 50}, Verdict.TAKE),
    ({"status": IN_PROGRESS, "lease_expires_at": 200}, Verdict.BUSY),
    ({"status": IN_PROGRESS, "lease_expires_at": 100}, Verdict.TAKE),
    ({"status": IN_PROGRESS}, Verdict.TAKE),
])
def test_judge_record(record, verdict):
    assert judge_record(record, now=100) is verdict


@pytest.fixture
def store(storage) -> IdempotencyStore:
    return IdempotencyStore.connect(storage, lease_seconds=30)


def key() -> str:
    return f"key/with#odd?chars-{uuid.uuid4()}"


def test_claim_complete_then_duplicate_returns_the_stored_result(store):
    k = key()
    claim = store.claim("scope", k)
    assert store.status("scope", k) == IN_PROGRESS
    store.complete(claim, {"event_id": "e1"})
    with pytest.raises(AlreadyCompleted) as done:
        store.claim("scope", k)
    assert done.value.result == {"event_id": "e1"}


def test_live_lease_is_busy_and_expired_lease_is_taken_over(store):
    k = key()
    store.claim("scope", k, now=1000)
    with pytest.raises(AlreadyInProgress) as busy:
        store.claim("scope", k, now=1010)
    assert busy.value.retry_after == pytest.approx(20)
    claim = store.claim("scope", k, now=1031)  # the first holder crashed; its lease ran out
    store.complete(claim, None)
    assert store.status("scope", k) == COMPLETED


def test_expired_completion_can_be_redone(store):
    k = key()
    store.complete(store.claim("scope", k, now=0), None, ttl_seconds=10, now=0)
    store.claim("scope", k, now=11)
    assert store.status("scope", k) == IN_PROGRESS


def test_release_lets_a_retry_do_the_work(store):
    k = key()
    store.release(store.claim("scope", k))
    assert store.status("scope", k) is None
    store.claim("scope", k)


def test_scopes_are_independent(store):
    k = key()
    store.claim("a", k)
    store.claim("b", k)


def test_racing_claims_have_exactly_one_winner(store):
    k = key()
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def contend():
        barrier.wait()
        try:
            store.claim("race", k)
            outcomes.append("won")
        except AlreadyInProgress:
            outcomes.append("busy")

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy"] * 7 + ["won"]


def test_state_table_etag_conflicts(storage):
    table = StateTable(storage, "gatehousetests")
    row = uuid.uuid4().hex
    etag = table.insert("p", row, {"n": 1})
    with pytest.raises(ConcurrencyConflict):
        table.insert("p", row, {"n": 2})
    new_etag = table.replace("p", row, {"n": 2}, etag)
    with pytest.raises(ConcurrencyConflict):
        table.replace("p", row, {"n": 3}, etag)  # stale etag
    assert table.get("p", row).properties["n"] == 2
    with pytest.raises(ConcurrencyConflict):
        table.delete("p", row, etag)
    table.delete("p", row, new_etag)
    assert table.get("p", row) is None


def test_process_once_runs_work_once_and_retries_after_failure(store):
    k = key()
    calls = []

    def failing():
        calls.append("fail")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        process_once(store, "handler", k, failing)
    assert process_once(store, "handler", k, lambda: calls.append("ok") or {"n": len(calls)}) \
        == {"n": 2}
    assert process_once(store, "handler", k, lambda: calls.append("again")) == {"n": 2}
    assert calls == ["fail", "ok"]


def test_identity_based_storage_setting_builds_managed_identity_clients(monkeypatch):
    from shared.foundation import runtime, storage

    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "gatehousefn")
    monkeypatch.setenv("AzureWebJobsStorage__clientId", "00000000-0000-0000-0000-000000000001")
    connection = runtime.storage_connection()
    assert connection == ("AccountName=gatehousefn;Authentication=ManagedIdentity;"
                          "ClientId=00000000-0000-0000-0000-000000000001")
    queues = storage.queue_service(connection)
    tables = storage.table_service(connection)
    assert queues.url.startswith("https://gatehousefn.queue.core.windows.net")
    assert tables.url.startswith("https://gatehousefn.table.core.windows.net")
    assert type(queues.credential).__name__ == "DefaultAzureCredential"
