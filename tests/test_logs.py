"""Structured logs: JSON lines carrying the invocation's event, reset after each invocation."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from shared.events import Envelope, RollbackRequested
from shared.foundation.failures import FailureLog
from shared.foundation.handling import process_event
from shared.foundation.idempotency import IdempotencyStore
from shared.foundation.logs import (
    JsonFormatter,
    current_fields,
    event_fields,
    log_context,
)
from shared.foundation.state import MemoryTable
from tests.notifications import builders


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gatehouse.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def canary_started() -> Envelope:
    return Envelope.wrap(builders.canary_started("fraud", "fraud-prod"), source="/gatehouse/test")


def rollback_envelope(model: str = "fraud", endpoint: str = "fraud-prod") -> Envelope:
    return Envelope.wrap(builders.rollback_requested(model, endpoint), source="/gatehouse/test")


def test_a_record_is_one_json_object_with_the_event_fields(captured):
    logger, records = captured
    envelope = rollback_envelope()
    with log_context(envelope):
        logger.info("rolling back %s", "v2")
    [record] = records()
    assert record["message"] == "rolling back v2" and record["level"] == "INFO"
    assert record["logger"] == "gatehouse.test-logs" and record["timestamp"].endswith("+00:00")
    assert (record["event_id"], record["event_type"]) == (envelope.id, envelope.type)
    assert (record["model"], record["version"], record["endpoint"]) == (
        "fraud", envelope.data.version, "fraud-prod")


def test_fields_an_event_lacks_are_left_out():
    envelope = builders.notification_envelope(builders.rollback_requested("fraud", "fraud-prod"))
    fields = event_fields(envelope)
    assert fields["model"] == "fraud" and "endpoint" not in fields
    assert fields == event_fields(json.loads(envelope.to_json()))


def test_the_context_ends_with_the_invocation_even_when_it_fails(captured):
    logger, records = captured
    with pytest.raises(RuntimeError):
        with log_context(rollback_envelope()):
            raise RuntimeError("boom")
    assert current_fields() == {}
    logger.info("between invocations")
    assert "event_id" not in records()[-1]


def test_exceptions_are_in_the_record(captured):
    logger, records = captured
    with log_context(rollback_envelope()):
        try:
            raise ValueError("the serving endpoint said no")
        except ValueError:
            logger.exception("rollback failed")
    [record] = records()
    assert "ValueError: the serving endpoint said no" in record["exception"]
    assert record["model"] == "fraud"


def test_a_handler_logs_with_its_event_only_while_it_processes_it(captured):
    logger, records = captured
    store = IdempotencyStore(MemoryTable())
    first, second = rollback_envelope(), rollback_envelope("churn", "churn-prod")

    def work(envelope: Envelope, data: RollbackRequested) -> dict:
        logger.info("rolling back %s", data.version)
        return {"event_id": current_fields().get("event_id")}

    failures = FailureLog(MemoryTable())

    def handle(envelope: Envelope) -> object:
        return process_event(envelope.to_json(), RollbackRequested, "test", work, store,
                             queue="open-rollback", failures=failures)

    assert handle(first) == {"event_id": first.id}
    assert handle(second) == {"event_id": second.id}
    with pytest.raises(ValueError):
        handle(canary_started())
    logger.info("after")
    assert [r.get("model") for r in records()] == ["fraud", "churn", None]
    assert [r.get("endpoint") for r in records()][:2] == ["fraud-prod", "churn-prod"]


def test_concurrent_invocations_keep_their_own_event(captured):
    logger, records = captured
    envelopes = [rollback_envelope(f"model-{n}", f"endpoint-{n}") for n in range(8)]
    barrier = threading.Barrier(len(envelopes))

    def invoke(envelope):
        with log_context(envelope):
            barrier.wait()
            logger.info("working on %s", envelope.data.model_name)

    threads = [threading.Thread(target=invoke, args=(e,)) for e in envelopes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r["message"] == f"working on {r['model']}" for r in records())
    assert len(records()) == len(envelopes)
