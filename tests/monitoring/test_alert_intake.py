"""POST /api/alerts/{source} called with azure.functions.HttpRequest objects, on Azurite: each
alert published once, resolutions closing what was opened, tokens, and clear 4xx answers."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import azure.functions as func
import pytest

from functions.alerts import receive_alert
from shared.alerts.store import OpenAlerts
from shared.events import MonitoringAlert
from shared.foundation import bus as bus_module
from shared.foundation.bus import Bus

SAMPLES = Path(__file__).parent / "samples"
TOKEN = "alert-token-for-tests"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def unique(document: dict) -> dict:
    """The sample with fresh Alertmanager fingerprints, so tests do not share alerts."""
    document = copy.deepcopy(document)
    for alert in document.get("alerts", []):
        alert["fingerprint"] = uuid.uuid4().hex[:16]
    return document


@pytest.fixture
def events(storage_env, monkeypatch) -> str:
    """A queue of this test's own for what the handler publishes."""
    name = f"events-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(bus_module, "GATEHOUSE_EVENTS", name)
    for source in ("ALERTMANAGER", "AZURE_MONITOR", "DATABRICKS_SQL", "GATEHOUSE"):
        monkeypatch.delenv(f"GATEHOUSE_ALERT_TOKEN_{source}", raising=False)
    return name


def post(source: str, body, headers: dict | None = None) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = receive_alert(func.HttpRequest(
        "POST", f"http://127.0.0.1/api/alerts/{source}", body=raw,
        headers={"Content-Type": "application/json", **(headers or {})},
        route_params={"source": source}))
    return reply.status_code, json.loads(reply.get_body())


def published(storage: str, queue: str) -> list[MonitoringAlert]:
    return [e.data for e in Bus(storage).peek(queue)]


def test_a_grouped_alertmanager_post_publishes_each_alert_once(events, storage_env):
    document = unique(sample("alertmanager_model_group"))
    document["alerts"][1]["status"] = "firing"
    status, body = post("alertmanager", document)
    assert status == 202, body
    assert [a["outcome"] for a in body["alerts"]] == ["accepted", "accepted"]
    alerts = published(storage_env, events)
    assert sorted(a.alert_kind.value for a in alerts) == ["feature_drift", "latency"]
    # Alertmanager repeats firing groups every repeat_interval: nothing new is published.
    status, body = post("alertmanager", document)
    assert status == 200 and [a["outcome"] for a in body["alerts"]] == ["duplicate"] * 2
    assert len(published(storage_env, events)) == 2


def test_resolved_closes_what_the_firing_alert_opened(events, storage_env):
    firing = unique(sample("alertmanager_v4_sample"))
    fingerprint = f"alertmanager:{firing['alerts'][0]['fingerprint']}"
    assert post("alertmanager", firing)[0] == 202
    store = OpenAlerts.connect(storage_env)
    assert store.get(fingerprint).is_open
    resolved = copy.deepcopy(firing)
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2023-02-06T13:20:00Z"
    status, body = post("alertmanager", resolved)
    assert status == 202 and body["alerts"][0]["outcome"] == "accepted"
    assert not store.get(fingerprint).is_open
    assert [a.status for a in published(storage_env, events)] == ["firing", "resolved"]
    assert fingerprint not in {r.fingerprint for r in store.open_alerts()}


def test_a_resolution_of_nothing_open_is_acknowledged_not_an_error(events, storage_env):
    resolved = unique(sample("alertmanager_v4_sample"))
    resolved["alerts"][0]["status"] = "resolved"
    status, body = post("alertmanager", resolved)
    assert status == 200
    assert body["alerts"][0]["outcome"] == "acknowledged"
    assert published(storage_env, events) == []
    # A late firing of the same (already resolved) episode does not reopen it.
    late = copy.deepcopy(resolved)
    late["alerts"][0]["status"] = "firing"
    status, body = post("alertmanager", late)
    assert status == 200 and body["alerts"][0]["outcome"] == "acknowledged"
    assert published(storage_env, events) == []


def test_azure_monitor_sample_is_taken_and_its_repeat_dropped(events, storage_env):
    document = sample("azure_monitor_log_search_v2_fired")
    document["data"]["essentials"]["alertId"] += uuid.uuid4().hex
    status, body = post("azure-monitor", document)
    assert status == 202
    [alert] = published(storage_env, events)
    assert (alert.model_name, alert.endpoint, alert.alert_kind.value) == (
        "fraud", "fraud-prod", "feature_drift")
    assert post("azure-monitor", document)[1]["alerts"][0]["outcome"] == "duplicate"


def test_databricks_unknown_state_is_acknowledged(events, storage_env):
    document = sample("databricks_sql_alert_triggered")
    document["alert"]["alert"]["evaluations"][0]["state"] = "UNKNOWN"
    status, body = post("databricks-sql", document)
    assert status == 200 and body["alerts"] == [] and "UNKNOWN" in body["ignored"][0]


@pytest.mark.parametrize("headers", [{"X-Gatehouse-Alert-Token": TOKEN},
                                     {"Authorization": f"Bearer {TOKEN}"},
                                     {"authorization": f"bearer {TOKEN}"}])
def test_token_in_either_header_is_accepted(events, monkeypatch, headers):
    monkeypatch.setenv("GATEHOUSE_ALERT_TOKEN_ALERTMANAGER", TOKEN)
    assert post("alertmanager", unique(sample("alertmanager_v4_sample")), headers)[0] == 202


@pytest.mark.parametrize("headers,message", [
    ({}, "missing alert token"),
    ({"X-Gatehouse-Alert-Token": "wrong"}, "does not match"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing alert token"),
    ({"Authorization": f"Bearer {TOKEN}x"}, "does not match"),
])
def test_missing_or_wrong_token_is_401(events, storage_env, monkeypatch, headers, message):
    monkeypatch.setenv("GATEHOUSE_ALERT_TOKEN_ALERTMANAGER", TOKEN)
    status, body = post("alertmanager", unique(sample("alertmanager_v4_sample")), headers)
    assert status == 401 and message in body["error"]
    assert published(storage_env, events) == []


def test_a_token_guards_only_its_own_source(events, monkeypatch):
    monkeypatch.setenv("GATEHOUSE_ALERT_TOKEN_AZURE_MONITOR", TOKEN)
    assert post("alertmanager", unique(sample("alertmanager_v4_sample")))[0] == 202
    assert post("azure-monitor", sample("azure_monitor_common_schema_sample"))[0] == 401


def test_unknown_source_is_404(events):
    status, body = post("nagios", {"x": 1})
    assert status == 404 and "known sources: azure-monitor, alertmanager" in body["error"]


def test_bad_bodies_are_400_with_the_problem(events, storage_env):
    status, body = post("alertmanager", b"{\"version\": \"4\"")
    assert status == 400 and "not valid JSON" in body["error"]
    document = sample("alertmanager_v4_sample")
    del document["alerts"][0]["startsAt"]
    status, body = post("alertmanager", document)
    assert status == 400 and "alerts.0.startsAt: Field required" in body["problems"]
    assert published(storage_env, events) == []


def test_oversize_is_413_and_wrong_media_type_415(events, monkeypatch):
    from shared.foundation import runtime

    monkeypatch.setenv("GATEHOUSE_MAX_BODY_BYTES", "512")
    runtime.reset()
    status, body = post("alertmanager", sample("alertmanager_model_group"))
    assert status == 413 and "the limit is 512" in body["error"]
    status, body = post("gatehouse", b"x", {"Content-Type": "text/plain"})
    assert status == 415 and "send application/json" in body["error"]
