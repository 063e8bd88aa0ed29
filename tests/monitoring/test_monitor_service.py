"""The monitor's shell through its HTTP routes, on Azurite and the embedded payload log: labels
arrive late, windows are judged once, alerts are published, figures reach MLflow."""

from __future__ import annotations

import json
import uuid

import azure.functions as func
import pytest

from functions.monitor import monitor_now, receive_labels
from shared.events import AlertKind, MonitoringAlert
from shared.foundation import bus as bus_module
from shared.foundation.bus import Bus
from shared.monitoring.labels import LabelStore
from shared.monitoring.reference import ReferenceStore
from shared.monitoring.service import RUN_TAG
from shared.serving.payload_log import PayloadLog
from tests.monitoring.traffic import START, WINDOW, window_traffic


@pytest.fixture
def env(storage_env, monkeypatch, tmp_path):
    queue = f"events-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(bus_module, "GATEHOUSE_EVENTS", queue)
    monkeypatch.setenv("GATEHOUSE_PAYLOAD_LOG", str(tmp_path / "payloads.sqlite"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    return {"storage": storage_env, "queue": queue, "log": PayloadLog(tmp_path /
                                                                      "payloads.sqlite")}


def run(now: float | None = None, body: bytes | None = None) -> tuple[int, dict]:
    raw = body if body is not None else json.dumps({"now": now}).encode()
    reply = monitor_now(func.HttpRequest("POST", "http://127.0.0.1/api/monitor/run", body=raw))
    return reply.status_code, json.loads(reply.get_body())


def post_labels(endpoint: str, body) -> tuple[int, dict]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = receive_labels(func.HttpRequest(
        "POST", f"http://127.0.0.1/api/monitor/labels/{endpoint}", body=raw,
        route_params={"endpoint": endpoint}))
    return reply.status_code, json.loads(reply.get_body())


def serve_windows(env, fitted, endpoint: str, plan: list[dict]) -> dict[str, float]:
    truth = {}
    for offset, spec in enumerate(plan):
        records, labels = window_traffic(fitted, START + offset, 300, seed=500 + offset,
                                         endpoint=endpoint, shift=spec.get("shift", 0.0),
                                         batch=25)
        for record in records:
            env["log"].append(record)
        truth.update(labels)
    return truth


def end_of(window: int) -> float:
    return (window + 1) * WINDOW + 1


def alerts(env) -> list[MonitoringAlert]:
    return [e.data for e in Bus(env["storage"]).peek(env["queue"])]


def test_windows_are_judged_once_and_drift_is_published(env, fitted):
    endpoint = f"fraud-{uuid.uuid4().hex[:8]}"
    ReferenceStore.connect(env["storage"]).save(fitted.reference)
    truth = serve_windows(env, fitted, endpoint, [{}, {}, {"shift": 0.7}, {"shift": 0.7}])
    assert post_labels(endpoint, {"labels": truth})[0] == 202

    status, first = run(end_of(START))  # no state yet: the latest complete window only
    assert status == 200
    windows = first["endpoints"][endpoint]["windows"]
    assert [w["window"] for w in windows] == [START] and windows[0]["reference"]
    assert windows[0]["figures"]["labelled_rows"] == 300
    assert first["endpoints"][endpoint]["alerts"] == []

    status, second = run(end_of(START + 3))  # catches up on the three windows since
    judged = second["endpoints"][endpoint]
    assert [w["window"] for w in judged["windows"]] == [START + 1, START + 2, START + 3]
    firing = {(a["window"], a["metric"]) for a in judged["alerts"] if a["status"] == "firing"}
    assert {(START + 2, "feature_psi"), (START + 2, "prediction_psi"),
            (START + 3, "feature_psi")} <= firing
    published = [a for a in alerts(env) if a.endpoint == endpoint]
    drift = [a for a in published if a.alert_kind is AlertKind.FEATURE_DRIFT]
    assert len(drift) == 2 and drift[0].fingerprint == drift[1].fingerprint
    assert (drift[0].model_name, drift[0].version) == ("fraud", "1")

    status, third = run(end_of(START + 3))  # the same windows again: nothing to do
    assert third["endpoints"][endpoint] == {"windows": [], "alerts": []}
    assert len([a for a in alerts(env) if a.endpoint == endpoint]) == len(published)


def test_without_a_reference_only_service_figures_are_judged(env, fitted):
    endpoint = f"noref-{uuid.uuid4().hex[:8]}"
    records, _ = window_traffic(fitted, START, 300, seed=9, endpoint=endpoint, version="77",
                                batch=5)
    for record in records:
        env["log"].append(record)
    status, summary = run(end_of(START))
    [window] = summary["endpoints"][endpoint]["windows"]
    assert window["reference"] is False and "latency_p99_ms" in window["figures"]
    assert "feature_psi" not in window["figures"]


def test_monitor_run_validates_its_body(env):
    assert run(body=b"{oops")[0] == 400
    assert run(body=json.dumps({"now": "soon"}).encode())[0] == 400
    assert run(body=json.dumps({"when": 1}).encode())[0] == 400


def test_monitor_without_traffic_says_what_to_configure(storage_env, monkeypatch):
    monkeypatch.delenv("GATEHOUSE_PAYLOAD_LOG", raising=False)
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    status, body = run(body=b"")
    assert status == 503 and "GATEHOUSE_PAYLOAD_LOG" in body["error"]


def test_labels_are_stored_last_write_wins(env):
    endpoint = f"labels-{uuid.uuid4().hex[:8]}"
    keys = {f"req-{i}": i % 2 for i in range(130)}  # more than one transaction batch
    assert post_labels(endpoint, {"labels": keys}) == (
        202, {"status": "stored", "endpoint": endpoint, "labels": 130})
    assert post_labels(endpoint, {"labels": {"req-1": False, "req/x": "true"}})[0] == 202
    found = LabelStore.connect(env["storage"]).get(endpoint, ["req-0", "req-1", "req/x", "nope"])
    assert found == {"req-0": 0.0, "req-1": 0.0, "req/x": 1.0}


@pytest.mark.parametrize("body,status,message", [
    (b"nope", 400, "not JSON"), ({"labels": {}}, 400, "at least one label"),
    ({"labels": {"a": "maybe"}}, 400, "not numbers"), ({"labels": [1]}, 400, "expected"),
])
def test_bad_labels_are_refused(env, body, status, message):
    code, reply = post_labels("fraud-prod", body)
    assert code == status and message in json.dumps(reply)


@pytest.mark.e2e
def test_figures_are_logged_to_mlflow_as_a_time_series(env, fitted, mlflow_server, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    endpoint = f"mlflow-{uuid.uuid4().hex[:8]}"
    ReferenceStore.connect(env["storage"]).save(fitted.reference)
    serve_windows(env, fitted, endpoint, [{}, {"shift": 0.7}])
    run(end_of(START))
    run(end_of(START + 1))
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("gatehouse-monitoring")
    [monitor_run] = client.search_runs([experiment.experiment_id],
                                       f"tags.`{RUN_TAG}` = '{endpoint}'")
    history = client.get_metric_history(monitor_run.info.run_id, "v1/feature_psi")
    assert [m.step for m in history] == [START, START + 1]
    assert history[0].value < 0.1 < 0.2 < history[1].value
    alerting = client.get_metric_history(monitor_run.info.run_id, "v1/alert.feature_psi")
    assert [m.value for m in alerting] == [0.0, 1.0]
    assert {"v1/latency_p99_ms", "v1/psi.amount", "v1/cbpe_accuracy"} <= set(
        monitor_run.data.metrics)
