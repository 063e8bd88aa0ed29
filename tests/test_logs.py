"""Structured logs: JSON lines carrying the invocation's event, reset after each invocation."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from shared.events import Envelope
from shared.foundation.logs import (
    JsonFormatter,
    current_fields,
    event_fields,
    event_log_context,
    log_context,
)
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


class Message:
    def __init__(self, body: str):
        self.body = body

    def get_body(self) -> bytes:
        return self.body.encode()


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


def test_a_queue_trigger_logs_with_its_message_event_and_only_during_its_call(captured):
    logger, records = captured
    first, second = rollback_envelope(), rollback_envelope("churn", "churn-prod")

    @event_log_context
    def trigger(msg) -> str:
        logger.info("handling")
        return current_fields().get("event_id")

    assert trigger(Message(first.to_json())) == first.id
    assert trigger(Message(second.to_json())) == second.id
    trigger(Message("not json"))
    logger.info("after")
    assert [r.get("model") for r in records()] == ["fraud", "churn", None, None]
    assert [r.get("event_id") for r in records()][:2] == [first.id, second.id]


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
