"""The receiver with real queues on Azurite: accept, refuse, never lose; the router drops the
repeats a sender's retries enqueue."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from mlflow.webhooks.types import ModelVersionCreatedPayload

from functions import router
from shared.events import Envelope
from shared.foundation import claims
from shared.foundation.bus import Bus
from shared.foundation.settings import Settings
from shared.foundation.storage import decode_queue_message
from shared.intake import receiver
from shared.intake.signatures import databricks_signature

SECRET = "receiver-secret"
SETTINGS = Settings(mlflow_webhook_secret=SECRET, databricks_webhook_secret=SECRET,
                    max_body_bytes=4096)


@pytest.fixture
def queue_name(storage) -> str:
    return f"registry-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bus(storage, queue_name, monkeypatch) -> Bus:
    monkeypatch.setattr(receiver, "REGISTRY_EVENTS", queue_name)
    return Bus(storage)


def signed(payload: dict | None = None, delivery_id: str | None = None, secret: str = SECRET,
           timestamp: int | None = None) -> tuple[dict, bytes]:
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": datetime.now(UTC).isoformat(),
                       "data": payload or {**ModelVersionCreatedPayload.example(),
                                           "name": "fraud"}})
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(timestamp or int(time.time()))
    return ({"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
             "X-MLflow-Timestamp": stamp,
             "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp, body)},
            body.encode())


def receive(bus, headers, body, sender="mlflow", settings=SETTINGS):
    return receiver.receive(sender, headers, body, settings, queue=bus)


def take_all(bus: Bus, queue: str) -> list[bytes]:
    """The bodies waiting on a queue, taken off it."""
    client, bodies = bus._queue(queue), []
    while batch := list(client.receive_messages(max_messages=32)):
        for message in batch:
            bodies.append(decode_queue_message(message.content, bus.encoding))
            client.delete_message(message)
    return bodies


def test_signed_delivery_is_enqueued_as_a_typed_envelope(bus, queue_name):
    headers, body = signed()
    reply = receive(bus, headers, body)
    assert reply.status == 202, reply.body
    waiting = bus.peek(queue_name)
    assert [e.id for e in waiting] == [reply.body["event_id"]]
    assert waiting[0].type == "io.gatehouse.model_version.created"
    assert waiting[0].data.model_name == "fraud"


def test_mlflows_test_delivery_is_acknowledged_and_not_acted_on(bus, queue_name):
    headers, body = signed(payload=ModelVersionCreatedPayload.example())
    reply = receive(bus, headers, body)
    assert reply.status == 200 and "MLflow's test delivery" in json.dumps(reply.body)
    assert bus.peek(queue_name) == []


def test_redelivery_is_enqueued_under_the_same_id_and_routed_once(bus, queue_name, storage_env):
    from shared.foundation.queues import NOTIFICATIONS, RUN_GATES

    headers, body = signed(payload={**ModelVersionCreatedPayload.example(),
                                    "name": f"redelivered-{uuid.uuid4().hex[:6]}"})
    first = receive(bus, headers, body)
    again = receive(bus, headers, body)
    assert (first.status, again.status) == (202, 202)
    assert again.body["event_id"] == first.body["event_id"]
    results = [router.route(message, queue_name) for message in take_all(bus, queue_name)]
    assert results == [{"forwarded_to": [RUN_GATES, NOTIFICATIONS]}] * 2  # the stored result
    forwarded = [body for body in take_all(bus, RUN_GATES)
                 if Envelope.from_json(bus.open(body)).id == first.body["event_id"]]
    assert len(forwarded) == 1


def test_forged_and_stale_deliveries_are_refused_and_not_enqueued(bus, queue_name):
    headers, body = signed(secret="not-the-secret")
    assert receive(bus, headers, body).status == 401
    headers, body = signed(timestamp=int(time.time()) - 3600)
    reply = receive(bus, headers, body)
    assert reply.status == 401 and "tolerance" in reply.body["error"]
    assert bus.depth(queue_name) == 0


def test_refused_delivery_id_is_not_burned(bus, queue_name):
    """A forged request that reuses a real delivery id must not make the real one a duplicate."""
    headers, body = signed(delivery_id="shared-id")
    forged = {**headers, "X-MLflow-Signature": "v1," + "A" * 44}
    assert receive(bus, forged, body).status == 401
    assert receive(bus, headers, body).status == 202


def test_oversize_body_is_413_before_anything_else(bus):
    reply = receive(bus, {}, b"{" + b" " * 5000 + b"}")
    assert reply.status == 413 and "limit is 4096" in reply.body["error"]


def test_wrong_content_type_is_415(bus):
    headers, body = signed()
    reply = receive(bus, {**headers, "Content-Type": "text/plain"}, body)
    assert reply.status == 415


def test_header_names_are_matched_whatever_their_case(bus):
    headers, body = signed()
    shouted = {name.upper(): value for name, value in headers.items() if name != "Content-Type"}
    assert receive(bus, {**shouted, "CONTENT-TYPE": "text/plain"}, body).status == 415
    assert receive(bus, {**shouted, "CONTENT-TYPE": "application/json"}, body).status == 202


def test_shape_errors_are_400_with_problems(bus):
    headers, body = signed(payload={"name": "m"})
    reply = receive(bus, headers, body)
    assert reply.status == 400
    assert "data.version: Field required" in reply.body["problems"]


def test_prompt_events_are_acknowledged_as_ignored(bus, queue_name):
    body = json.dumps({"entity": "prompt", "action": "created",
                       "timestamp": datetime.now(UTC).isoformat(),
                       "data": {"name": "p", "tags": {}, "description": None}}).encode()
    reply = receive(bus, {}, body, settings=Settings())
    assert reply.status == 200 and reply.body["status"] == "ignored"
    assert bus.depth(queue_name) == 0


def test_databricks_delivery_and_its_retry(bus, queue_name):
    body = json.dumps({"event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "webhook_id": "w1",
                       "event_timestamp": int(time.time() * 1000), "model_name": "fraud",
                       "version": "4", "from_stage": "Staging", "to_stage": "Production"}).encode()
    headers = {"X-Databricks-Signature": databricks_signature(SECRET, body)}
    first = receive(bus, headers, body, sender="databricks")
    assert first.status == 202
    retried = receive(bus, headers, body, sender="databricks")  # the same body: the same id
    assert retried.status == 202 and retried.body["event_id"] == first.body["event_id"]
    event, repeat = bus.peek(queue_name)
    assert event.data.to_stage == "Production" and event.data.registry == "databricks"
    assert repeat.id == event.id
    assert receive(bus, {}, body, sender="databricks").status == 401


class BrokenQueue:
    def send(self, queue, envelope):
        raise ConnectionError("storage is down")


def test_queue_outage_is_503_and_the_retry_succeeds(bus, queue_name):
    headers, body = signed()
    down = receiver.receive("mlflow", headers, body, SETTINGS, queue=BrokenQueue())
    assert down.status == 503 and down.headers["Retry-After"] == "30"
    back = receiver.receive("mlflow", headers, body, SETTINGS, queue=bus)
    assert back.status == 202
    assert bus.depth(queue_name) == 1


@pytest.mark.parametrize("tolerance,retry_after", [(300, 30), (600, 30), (60, 6), (5, 1)])
def test_retry_after_leaves_a_retried_request_fresh(tolerance, retry_after):
    settings = Settings(webhook_tolerance_seconds=tolerance)
    assert receiver.retry_after_seconds(settings) == retry_after
    assert retry_after <= max(1, tolerance / 10)


def test_a_delivery_too_large_for_a_queue_message_travels_by_claim_check(bus, queue_name):
    payload = {**ModelVersionCreatedPayload.example(), "description": "long words " * 20_000,
               "tags": {f"team.note.{n}": "x" * 80 for n in range(500)}}
    headers, body = signed(payload=payload)
    assert 200_000 < len(body) < Settings().max_body_bytes
    reply = receive(bus, headers, body, settings=Settings(mlflow_webhook_secret=SECRET))
    assert reply.status == 202, reply.body
    [message] = take_all(bus, queue_name)
    assert len(message) < 1024 and claims.reference_in(message) is not None
    envelope = Envelope.from_json(bus.open(message))
    assert envelope.id == reply.body["event_id"]
    assert envelope.data.description == payload["description"]
    assert len(envelope.data.tags) == 500
