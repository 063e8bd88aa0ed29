"""The rollout service on Databricks Model Serving: the real SDK client against the local peer,
a real MLflow registry (SQLite), Azurite for the state and the event queue. Databricks exports
per-minute figures, so the service accumulates minutes itself - each counted once."""

from __future__ import annotations

import time
import uuid

import pytest

from shared.events import Envelope
from shared.foundation import bus as bus_module
from shared.foundation.bus import Bus
from shared.foundation.settings import Settings
from shared.foundation.storage import decode_queue_message, queue_options, queue_service
from shared.rollout.policy import RolloutPolicy
from shared.rollout.service import RolloutService
from shared.rollout.store import RolloutStore, RolloutTable
from shared.serving.base import ServingError
from shared.serving.databricks import DatabricksServing
from shared.serving.embedded_client import EmbeddedServing
from shared.serving.factory import serving_backend
from tests.rollout.databricks_peer import TOKEN, DatabricksPeer

EVENTS_QUEUE = f"gatehouse-events-dbx-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def peer():
    server = DatabricksPeer(update_polls=1).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from shared.registry.client import Registry

    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    return Registry(tracking_uri=uri, registry_uri=uri)


def minute(model: str, ts: float, champion: tuple[int, int], challenger: tuple[int, int]) -> str:
    """One minute of the metrics export; entities are named `<model>-<version>`."""
    lines = []
    stamp = int(ts * 1000)
    short = model.split(".")[-1]
    for entity, (requests, errors) in ((f"{short}-1", champion), (f"{short}-2", challenger)):
        lines += [f'request_count_total{{served_entity_name="{entity}"}} {requests} {stamp}',
                  f'request_5xx_count_total{{served_entity_name="{entity}"}} {errors} {stamp}',
                  f'request_latency_ms_bucket{{served_entity_name="{entity}",le="10"}} '
                  f'{requests // 2} {stamp}',
                  f'request_latency_ms_bucket{{served_entity_name="{entity}",le="25"}} '
                  f'{requests} {stamp}',
                  f'request_latency_ms_bucket{{served_entity_name="{entity}",le="+Inf"}} '
                  f'{requests} {stamp}']
    return "\n".join(lines) + "\n"


def events_about(storage: str, model: str) -> list[str]:
    client = queue_service(storage).get_queue_client(EVENTS_QUEUE)
    messages = list(client.receive_messages(messages_per_page=32, visibility_timeout=30))
    for message in messages:
        client.update_message(message, visibility_timeout=0)
    found = {}
    for message in messages:
        envelope = Envelope.from_json(decode_queue_message(message.content,
                                                          queue_options().message_encoding))
        if getattr(envelope.data, "model_name", None) == model:
            found[envelope.id] = envelope
    return [e.data.kind for e in sorted(found.values(), key=lambda e: e.time)]


def test_a_canary_on_databricks_accumulates_minutes_once_and_promotes(peer, registry, storage,
                                                                     monkeypatch):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    # A private events queue, out of reach of a Functions host's router in the same session.
    monkeypatch.setattr(bus_module, "GATEHOUSE_EVENTS", EVENTS_QUEUE)
    model = f"main.risk.fraud_{uuid.uuid4().hex[:6]}"
    endpoint = f"ep-{uuid.uuid4().hex[:6]}"
    registry.client.create_registered_model(model)
    for _ in range(2):
        registry.client.create_model_version(model, source="s3://models/fraud", run_id=None)
    registry.set_alias(model, "champion", "1")
    peer.register(model, "1", "2")
    peer.create_endpoint(endpoint, model, "1")

    client = WorkspaceClient(config=Config(host=peer.url, token=TOKEN, auth_type="pat",
                                           retry_timeout_seconds=15))
    backend = DatabricksServing(client, base_delay=0.05, poll_interval=0.02)
    policy = RolloutPolicy(endpoint=endpoint, steps=(10, 100), min_bake_seconds=0,
                           min_requests_per_step=50, warmup_seconds=0, max_warmup_seconds=0,
                           replay_sample_size=0, error_margin_absolute=0.5,
                           latency_tail_share=1.0)
    service = RolloutService(RolloutStore(RolloutTable(storage, f"r{uuid.uuid4().hex[:12]}")),
                             backend, registry, Bus(storage), lambda name: policy)

    service.start(model, "2", actor="gate-suite", reason="gates passed")
    assert peer.routes(endpoint) == {"1": 90, "2": 10}
    assert registry.version_by_alias(model, "challenger").version == "2"

    first = time.time() + 60
    peer.metrics[endpoint] = minute(model, first, (270, 0), (30, 0))
    held = service.tick(endpoint)
    assert held["verdict"]["action"] == "hold" and "20 more challenger" in held["verdict"]["reason"]
    again = service.tick(endpoint)  # the same minute exported again: not counted twice
    assert "20 more challenger" in again["verdict"]["reason"]

    peer.metrics[endpoint] = minute(model, first + 60, (270, 1), (30, 0))
    done = service.tick(endpoint)
    assert done["verdict"]["action"] == "promote", done["verdict"]
    assert done["verdict"]["figures"]["challenger_requests"] == 60
    assert done["verdict"]["figures"]["champion_errors"] == 1
    assert peer.routes(endpoint) == {"2": 100, "1": 0}
    assert done["champion"] == "2"
    assert registry.version_by_alias(model, "champion").version == "2"
    assert registry.version(model, "1").tags["gatehouse.archived"] == "true"
    assert events_about(storage, model) == ["rollout.canary_started", "rollout.traffic_ramped",
                                            "rollout.promoted"]


def test_the_backend_comes_from_the_settings(peer):
    assert isinstance(serving_backend(Settings.from_env({"DATABRICKS_HOST": peer.url,
                                                         "DATABRICKS_TOKEN": TOKEN})),
                      DatabricksServing)
    assert isinstance(serving_backend(Settings.from_env({"GATEHOUSE_SERVING_URL": "http://127.0.0.1:1"})),
                      EmbeddedServing)
    with pytest.raises(ServingError, match="DATABRICKS_HOST"):
        serving_backend(Settings.from_env({}))
