"""End to end: a real MLflow server's signed webhooks reach the Functions app through real queues.

Servers: Azurite, moto's S3 (MLflow's artifact store), `mlflow server` on SQLite, and the
project's local Functions host running function_app.app.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
import requests

from shared.channels.outbox import OutboxChannel
from shared.dev import devstack
from shared.dev.devstack import wait_for
from shared.events import Envelope, ModelVersionCreated
from shared.foundation.bus import REGISTRY_EVENTS, Bus
from shared.foundation.idempotency import COMPLETED, IdempotencyStore
from shared.intake import signatures
from tests.test_inbound import MALFORMED_DATABRICKS, MALFORMED_MLFLOW

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mlflow_client(mlflow_server, moto_s3):
    import mlflow
    from mlflow import MlflowClient

    os.environ.update(devstack.mlflow_client_env(moto_s3.url))
    mlflow.set_tracking_uri(mlflow_server.url)
    return MlflowClient(tracking_uri=mlflow_server.url)


def notifications_for(outbox_path, model: str) -> list[dict]:
    return [n for n in OutboxChannel(outbox_path).read() if n.get("model_name") == model]


def test_health(function_host):
    reply = requests.get(f"{function_host.url}/api/health", timeout=10)
    assert reply.status_code == 200
    assert reply.json()["mlflow_signatures_required"] is True


def test_real_mlflow_webhooks_flow_through_queues_exactly_once(
        mlflow_client, function_host, outbox_path, host_storage, webhook_secret):
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    hook = mlflow_client.create_webhook(
        name=f"gatehouse-{uuid.uuid4().hex[:8]}",
        url=f"{function_host.url}/api/registry/mlflow",
        events=["registered_model.created", "model_version.created",
                "model_version_alias.created", "model_version_tag.set"],
        secret=webhook_secret)
    try:
        test_result = mlflow_client.test_webhook(hook.webhook_id)
        assert test_result.success, test_result
        # MLflow's test delivery is signed like any other: verified, acknowledged, not acted on.
        assert test_result.response_status == 200, test_result
        assert "test delivery" in test_result.response_body

        model_name = f"fraud-{uuid.uuid4().hex[:8]}"
        rng = np.random.default_rng(0)
        features = rng.normal(size=(200, 3))
        labels = (features[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
        with mlflow.start_run():
            mlflow.sklearn.log_model(LogisticRegression().fit(features, labels), name="model",
                                     registered_model_name=model_name,
                                     input_example=features[:2])

        created = wait_for("the model_version.created notification", lambda: [
            n for n in notifications_for(outbox_path, model_name)
            if n["about_event_type"].endswith("model_version.created")])
        assert created[0]["version"] == "1"
        assert created[0]["title"] == f"{model_name} v1 registered"

        mlflow_client.set_registered_model_alias(model_name, "champion", "1")
        wait_for("the alias notification", lambda: any(
            "@champion" in n["title"] for n in notifications_for(outbox_path, model_name)))

        # Each registry event was processed once: one notification each, records completed.
        # (The gates also run on the version and report on it; only registry events count here.)
        registry_kinds = ("model_version.created", "model_version_alias.created",
                          "registered_model.created")
        notes = [n for n in notifications_for(outbox_path, model_name)
                 if n["about_event_type"].removeprefix("io.gatehouse.") in registry_kinds]
        kinds = sorted(n["about_event_type"].removeprefix("io.gatehouse.") for n in notes)
        assert kinds == sorted(registry_kinds)
        store = IdempotencyStore.connect(host_storage)
        for note in notes:
            assert store.status("router", note["about_event_id"]) == COMPLETED
            assert store.status("notify", note["event_id"]) == COMPLETED

        # At-least-once delivery: the same event enqueued again is dropped by the consumer.
        bus = Bus(host_storage)
        original = next(n for n in notes if n["about_event_type"].endswith("version.created"))
        replay = Envelope(id=original["about_event_id"], source="/gatehouse/registry/mlflow",
                          type="io.gatehouse.model_version.created",
                          time=original["facts"]["occurred"],
                          data=ModelVersionCreated(model_name=model_name, version="1"))
        bus.send(REGISTRY_EVENTS, replay)
        wait_for("the replay to be consumed", lambda: bus.depth(REGISTRY_EVENTS) == 0)
        time.sleep(1.0)
        assert len([n for n in notifications_for(outbox_path, model_name)
                    if n["about_event_id"] == original["about_event_id"]]) == 1
    finally:
        mlflow_client.delete_webhook(hook.webhook_id)


def test_forged_webhook_is_refused(function_host):
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": "2026-11-25T00:00:00+00:00",
                       "data": {"name": "m", "version": "1", "source": "s", "run_id": None,
                                "tags": {}, "description": None}}).encode()
    stamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": "forged-1",
               "X-MLflow-Timestamp": stamp,
               "X-MLflow-Signature": signatures.mlflow_signature("guess", "forged-1", stamp, body)}
    reply = requests.post(f"{function_host.url}/api/registry/mlflow", data=body, headers=headers,
                          timeout=10)
    assert reply.status_code == 401
    assert "does not match" in reply.json()["error"]
    unsigned = requests.post(f"{function_host.url}/api/registry/mlflow", data=body, timeout=10,
                             headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and "missing header" in unsigned.json()["error"]


@pytest.mark.parametrize("body,expected", MALFORMED_MLFLOW,
                         ids=[f"mlflow-{i}" for i in range(len(MALFORMED_MLFLOW))])
def test_malformed_signed_mlflow_bodies_get_400_over_http(function_host, webhook_secret, body,
                                                          expected):
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
               "X-MLflow-Timestamp": stamp,
               "X-MLflow-Signature": signatures.mlflow_signature(webhook_secret, delivery, stamp,
                                                                 body)}
    reply = requests.post(f"{function_host.url}/api/registry/mlflow", data=body, headers=headers,
                          timeout=10)
    assert reply.status_code == 400, reply.text
    assert expected in reply.json()["error"]


@pytest.mark.parametrize("body,expected", MALFORMED_DATABRICKS,
                         ids=[f"databricks-{i}" for i in range(len(MALFORMED_DATABRICKS))])
def test_malformed_signed_databricks_bodies_get_400_over_http(function_host, webhook_secret, body,
                                                              expected):
    headers = {"X-Databricks-Signature": signatures.databricks_signature(webhook_secret, body)}
    reply = requests.post(f"{function_host.url}/api/registry/databricks", data=body,
                          headers=headers, timeout=10)
    assert reply.status_code == 400, reply.text
    assert expected in reply.json()["error"]


def test_oversize_and_wrong_method_over_http(function_host):
    huge = b'{"pad": "' + b"x" * 2_000_000 + b'"}'
    reply = requests.post(f"{function_host.url}/api/registry/mlflow", data=huge, timeout=30,
                          headers={"Content-Type": "application/json"})
    assert reply.status_code == 413
    assert requests.get(f"{function_host.url}/api/registry/mlflow", timeout=10).status_code == 405
