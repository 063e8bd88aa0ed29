"""The receiver with real queues and tables on Azurite: accept, dedupe, refuse, never lose."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from mlflow.webhooks.types import ModelVersionCreatedPayload

from shared.foundation.bus import Bus
from shared.foundation.idempotency import IdempotencyStore
from shared.foundation.settings import Settings
from shared.intake import receiver
from shared.intake.signatures import databricks_signature

SECRET = "receiver-secret"
SETTINGS = Settings(mlflow_webhook_secret=SECRET, databricks_webhook_secret=SECRET,
                    max_body_bytes=4096)


@pytest.fixture
def queue_name(storage) -> str:
    return f"registry-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def deps(storage, queue_name, monkeypatch):
    monkeypatch.setattr(receiver, "REGISTRY_EVENTS", queue_name)
    return Bus(storage), IdempotencyStore.connect(storage)


def signed(payload: dict | None = None, delivery_id: str | None = None, secret: str = SECRET,
           timestamp: int | None = None) -> tuple[dict, bytes]:
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": datetime.now(UTC).isoformat(),
                       "data": payload or ModelVersionCreatedPayload.example()})
    delivery_id = delivery_id or str(uuid.uuid4())
    stamp = str(timestamp or int(time.time()))
    return ({"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery_id,
             "X-MLflow-Timestamp": stamp,
             "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, stamp, body)},
            body.encode())


def receive(deps, headers, body, sender="mlflow", settings=SETTINGS):
    bus, store = deps
    return receiver.receive(sender, headers, body, settings, queue=bus, dedupe=store)


def test_signed_delivery_is_enqueued_as_a_typed_envelope(deps, queue_name):
    headers, body = signed()
    reply = receive(deps, headers, body)
    assert reply.status == 202, reply.body
    waiting = deps[0].peek(queue_name)
    assert [e.id for e in waiting] == [reply.body["event_id"]]
    assert waiting[0].type == "io.gatehouse.model_version.created"
    assert waiting[0].data.model_name == "example_model"


def test_redelivery_answers_2xx_and_enqueues_nothing(deps, queue_name):
    headers, body = signed()
    first = receive(deps, headers, body)
    again = receive(deps, headers, body)
    assert again.status == 200
    assert again.body == {"status": "duplicate", "event_id": first.body["event_id"]}
    assert deps[0].depth(queue_name) == 1


def test_forged_and_stale_deliveries_are_refused_and_not_enqueued(deps, queue_name):
    headers, body = signed(secret="not-the-secret")
    assert receive(deps, headers, body).status == 401
    headers, body = signed(timestamp=int(time.time()) - 3600)
    reply = receive(deps, headers, body)
    assert reply.status == 401 and "tolerance" in reply.body["error"]
    assert deps[0].depth(queue_name) == 0


def test_refused_delivery_id_is_not_burned(deps, queue_name):
    """A forged request that reuses a real delivery id must not make the real one a duplicate."""
    headers, body = signed(delivery_id="shared-id")
    forged = {**headers, "X-MLflow-Signature": "v1," + "A" * 44}
    assert receive(deps, forged, body).status == 401
    assert receive(deps, headers, body).status == 202


def test_oversize_body_is_413_before_anything_else(deps):
    reply = receive(deps, {}, b"{" + b" " * 5000 + b"}")
    assert reply.status == 413 and "limit is 4096" in reply.body["error"]


def test_wrong_content_type_is_415(deps):
    headers, body = signed()
    reply = receive(deps, {**headers, "Content-Type": "text/plain"}, body)
    assert reply.status == 415


def test_header_names_are_matched_whatever_their_case(deps):
    headers, body = signed()
    shouted = {name.upper(): value for name, value in headers.items() if name != "Content-Type"}
    assert receive(deps, {**shouted, "CONTENT-TYPE": "text/plain"}, body).status == 415
    assert receive(deps, {**shouted, "CONTENT-TYPE": "application/json"}, body).status == 202


def test_shape_errors_are_400_with_problems(deps):
    headers, body = signed(payload={"name": "m"})
    reply = receive(deps, headers, body)
    assert reply.status == 400
    assert "data.version: Field required" in reply.body["problems"]


def test_prompt_events_are_acknowledged_as_ignored(deps, queue_name):
    body = json.dumps({"entity": "prompt", "action": "created",
                       "timestamp": datetime.now(UTC).isoformat(),
                       "data": {"name": "p", "tags": {}, "description": None}}).encode()
    reply = receive(deps, {}, body, settings=Settings())
    assert reply.status == 200 and reply.body["status"] == "ignored"
    assert deps[0].depth(queue_name) == 0


def test_databricks_delivery_and_its_retry(deps, queue_name):
    body = json.dumps({"event": "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", "webhook_id": "w1",
                       "event_timestamp": int(time.time() * 1000), "model_name": "fraud",
                       "version": "4", "from_stage": "Staging", "to_stage": "Production"}).encode()
    headers = {"X-Databricks-Signature": databricks_signature(SECRET, body)}
    first = receive(deps, headers, body, sender="databricks")
    assert first.status == 202
    assert receive(deps, headers, body, sender="databricks").status == 200
    [event] = deps[0].peek(queue_name)
    assert event.data.to_stage == "Production" and event.data.registry == "databricks"
    assert receive(deps, {}, body, sender="databricks").status == 401


class BrokenQueue:
    def send(self, queue, envelope):
        raise ConnectionError("storage is down")


def test_queue_outage_is_503_and_the_retry_succeeds(deps, queue_name):
    bus, store = deps
    headers, body = signed()
    down = receiver.receive("mlflow", headers, body, SETTINGS, queue=BrokenQueue(), dedupe=store)
    assert down.status == 503 and down.headers["Retry-After"]
    back = receiver.receive("mlflow", headers, body, SETTINGS, queue=bus, dedupe=store)
    assert back.status == 202
    assert bus.depth(queue_name) == 1
