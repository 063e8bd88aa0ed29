"""The queue handlers' common path on Azurite: twins in progress are put back quietly, leases fit
the work and are renewed while it runs, and every failure is recorded with its reason."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest

from shared.events import Envelope, ModelVersionCreated
from shared.foundation import runtime
from shared.foundation.bus import Bus
from shared.foundation.failures import FailureLog, failed_again
from shared.foundation.handling import consume, process_event, process_once
from shared.foundation.idempotency import COMPLETED, AlreadyInProgress, IdempotencyStore
from shared.foundation.state import ConcurrencyConflict, MemoryTable
from shared.foundation.storage import decode_queue_message, function_timeout


def created() -> Envelope:
    return Envelope.wrap(ModelVersionCreated(model_name=f"m-{uuid.uuid4().hex[:6]}", version="1"),
                         source="/tests")


def wait_for_message(bus: Bus, queue: str, timeout: float) -> tuple[bytes, float]:
    """The next message that becomes visible on `queue` (taken off it), and when it did."""
    client = bus._queue(queue)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in client.receive_messages(max_messages=1):
            client.delete_message(message)
            return decode_queue_message(message.content, bus.encoding), time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"nothing became visible on {queue} within {timeout}s")


def test_a_twin_in_progress_is_put_back_quietly_and_done_once(storage, caplog):
    caplog.set_level(logging.INFO, logger="gatehouse")
    store, bus = IdempotencyStore.connect(storage, lease_seconds=3), Bus(storage)
    failures = FailureLog.connect(storage)
    queue = f"twins-{uuid.uuid4().hex[:10]}"
    body = created().to_json().encode()
    started, finish, calls, results = threading.Event(), threading.Event(), [], []

    def work(envelope: Envelope, _: ModelVersionCreated) -> dict:
        calls.append(envelope.id)
        started.set()
        finish.wait(10)
        return {"calls": len(calls)}

    def handle(message: bytes):
        return process_event(message, ModelVersionCreated, "twins", work, store, queue=queue,
                             bus=bus, failures=failures)

    holder = threading.Thread(target=lambda: results.append(handle(body)))
    holder.start()
    assert started.wait(10)
    put_back_at = time.monotonic()
    assert handle(body) is None  # a redelivery while the first copy is worked on: no failure
    [note] = [r for r in caplog.records if "being processed by another worker" in r.getMessage()]
    assert note.levelno == logging.INFO and note.exc_info is None
    assert bus.depth(queue) == 1 and bus.peek(queue) == []  # waiting, invisible
    finish.set()
    holder.join(10)
    assert results == [{"calls": 1}]
    again, visible_at = wait_for_message(bus, queue, timeout=15)
    assert again == body
    assert visible_at - put_back_at >= 2  # not before the holder's lease would have run out
    assert handle(again) == {"calls": 1}  # the stored result: the work ran once
    assert calls == [json.loads(body)["id"]]
    assert failures.find(queue, body) is None


def test_the_heartbeat_keeps_a_long_unit_of_work_leased(storage):
    store = IdempotencyStore.connect(storage, lease_seconds=3)
    key, verdicts = uuid.uuid4().hex, []

    def long_work() -> dict:
        time.sleep(4)  # past the lease: only renewals (every second) keep it
        try:
            store.claim("long", key)
            verdicts.append("taken over")
        except AlreadyInProgress:
            verdicts.append("busy")
        time.sleep(0.5)
        return {"done": True}

    assert process_once(store, "long", key, long_work) == {"done": True}
    assert verdicts == ["busy"]
    assert store.status("long", key) == COMPLETED


def test_a_lease_taken_over_is_logged_and_its_completion_refused(caplog):
    store = IdempotencyStore(MemoryTable(), lease_seconds=0.3)

    def work() -> None:
        store.claim("scope", "k", now=time.time() + 10)  # another worker, once the lease ran out
        time.sleep(0.5)  # the heartbeat tries to renew meanwhile

    with pytest.raises(ConcurrencyConflict):
        process_once(store, "scope", "k", work)
    assert "the lease on k was taken over" in caplog.text


def test_a_released_key_stops_the_renewals():
    store = IdempotencyStore(MemoryTable(), lease_seconds=30)
    claim = store.claim("scope", "k")
    assert store.renew(claim)
    store.release(claim)
    assert not store.renew(claim)
    assert store.status("scope", "k") is None


def test_failures_are_recorded_with_handler_attempts_and_last_error():
    failures = FailureLog(MemoryTable())
    body = b'{"id": "event-1", "more": "fields"}'

    def refuse(content: bytes) -> None:
        raise RuntimeError(f"cannot handle {len(content)} bytes")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            consume("some-queue", "some-handler", body, refuse, failures=failures)
    record = failures.find("some-queue", body)
    assert record is not None
    assert (record["handler"], record["attempts"], record["event_id"]) == (
        "some-handler", 3, "event-1")
    assert record["last_error"] == f"RuntimeError: cannot handle {len(body)} bytes"
    assert record["first_failed_at"] <= record["last_failed_at"]
    assert failures.find("another-queue", body) is None


def test_an_unrecordable_failure_still_raises_the_original_error(caplog):
    class Unavailable:
        def record(self, *args) -> None:
            raise ConnectionError("table storage is down")

    def refuse(_: bytes) -> None:
        raise ValueError("bad message")

    with pytest.raises(ValueError, match="bad message"):
        consume("q", "h", b"x", refuse, failures=Unavailable())
    assert "could not record why a message on q failed" in caplog.text


def test_failed_again_is_pure_and_keeps_the_first_failure():
    from datetime import UTC, datetime

    first = failed_again(None, "h", "E: one", "e1", datetime(2026, 1, 1, tzinfo=UTC))
    second = failed_again(first, "h", "E: two", None, datetime(2026, 1, 2, tzinfo=UTC))
    assert second == {"handler": "h", "attempts": 2, "last_error": "E: two", "event_id": "e1",
                      "last_failed_at": "2026-01-02T00:00:00+00:00",
                      "first_failed_at": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize("value,seconds", [
    ("00:00:08", 8), ("00:05:00", 300), ("01:00:00", 3600), ("1.00:00:00", 86400), ("-1", None)])
def test_function_timeout_reads_host_json_timespans(value, seconds):
    assert function_timeout({"functionTimeout": value}) == seconds


def test_function_timeout_defaults_to_the_hosts_five_minutes():
    assert function_timeout({"version": "2.0"}) == 300


def test_the_idempotency_lease_is_the_apps_function_timeout(tmp_path, storage_env, monkeypatch):
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0",
                                                    "functionTimeout": "00:00:08"}))
    monkeypatch.setenv("AzureWebJobsScriptRoot", str(tmp_path))
    runtime.reset()
    assert runtime.idempotency().lease_seconds == 8
    monkeypatch.delenv("AzureWebJobsScriptRoot")
    runtime.reset()
    assert runtime.idempotency().lease_seconds == 300  # the project's host.json: 00:05:00
