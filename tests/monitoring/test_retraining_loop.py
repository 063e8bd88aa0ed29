"""End to end on the embedded stack: a version trained and registered on the real MLflow server
serves shifted traffic through embedded serving; the monitor (HTTP route) raises a drift alert;
the retraining handler starts the local entrypoint as a subprocess, which trains and registers
the next version, linked to the alert."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid

import azure.functions as func
import pytest

from functions.monitor import monitor_now
from functions.retraining import handle
from shared.dev.devstack import mlflow_client_env
from shared.events import AlertKind, MonitoringAlert
from shared.foundation import bus as bus_module
from shared.foundation.bus import Bus
from shared.foundation.queues import RUN_GATES
from shared.foundation.settings import Settings
from shared.foundation.storage import free_port
from shared.monitoring.local_training import FEATURES, generate, train_and_register
from shared.monitoring.policy import MonitoringPolicy, RetrainingPolicy
from shared.monitoring.reactions import LedgerStore, Reactions, launcher_for
from shared.monitoring.runners import LocalRunner
from shared.routing import handler_queues

pytestmark = pytest.mark.e2e
WINDOW = 300.0


@pytest.fixture
def stack(storage_env, mlflow_server, moto_s3, monkeypatch, tmp_path):
    for key, value in {**mlflow_client_env(moto_s3.url),
                       "MLFLOW_TRACKING_URI": mlflow_server.url,
                       "GATEHOUSE_PAYLOAD_LOG": str(tmp_path / "payloads.sqlite")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    queue = f"events-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(bus_module, "GATEHOUSE_EVENTS", queue)
    from shared.serving.embedded import serve

    server, host = serve(free_port(), payload_log=tmp_path / "payloads.sqlite")
    yield {"storage": storage_env, "queue": queue, "host": host,
           "url": f"http://127.0.0.1:{server.server_port}", "tmp": tmp_path}
    server.shutdown()
    server.server_close()


def invoke(url: str, endpoint: str, rows, request_id: str) -> dict:
    body = json.dumps({"dataframe_split": {"columns": list(FEATURES),
                                           "data": rows.tolist()}}).encode()
    request = urllib.request.Request(f"{url}/serving-endpoints/{endpoint}/invocations", data=body,
                                     headers={"Content-Type": "application/json",
                                              "X-Request-Id": request_id})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def shifted_burst(stack, endpoint: str) -> int:
    """Ten requests of 30 shifted rows, all inside one monitoring window; returns the window."""
    features, _ = generate(300, seed=7, shift=1.0)
    values = features.to_numpy()
    while True:
        started = time.time()
        for n in range(10):
            reply = invoke(stack["url"], endpoint, values[n * 30:(n + 1) * 30],
                           f"{endpoint}-{uuid.uuid4().hex[:8]}")
            assert len(reply["predictions"]) == 30 and len(reply["predictions"][0]) == 2
        if int(started // WINDOW) == int(time.time() // WINDOW):
            return int(started // WINDOW)


def test_drift_alert_retrains_and_registers_the_next_version(stack):
    from mlflow import MlflowClient

    model = f"fraud-loop-{uuid.uuid4().hex[:8]}"
    endpoint = f"{model}-prod"
    first = train_and_register(model, rows=1500, seed=1)
    assert first["version"] == "1"
    stack["host"].configure(endpoint, model, {"1": 100})
    window = shifted_burst(stack, endpoint)

    # The monitor finds the reference on the version's run (nothing saved in the table).
    reply = monitor_now(func.HttpRequest("POST", "http://127.0.0.1/api/monitor/run",
                                         body=json.dumps({"now": (window + 1) * WINDOW + 1})
                                         .encode()))
    assert reply.status_code == 200, reply.get_body()
    summary = json.loads(reply.get_body())["endpoints"][endpoint]
    assert summary["windows"][0]["reference"] and summary["windows"][0]["figures"]["rows"] == 300
    envelopes = [e for e in Bus(stack["storage"]).peek(stack["queue"])
                 if isinstance(e.data, MonitoringAlert) and e.data.endpoint == endpoint]
    drift = [e for e in envelopes if e.data.alert_kind is AlertKind.FEATURE_DRIFT]
    assert drift and drift[0].data.model_name == model and drift[0].data.version == "1"

    # The router forwards the alert to trigger-retraining; its handler starts the local runner.
    runner = LocalRunner(stack["tmp"] / "runs")
    policy = MonitoringPolicy(retraining=RetrainingPolicy(entrypoint=[
        "python", "-m", "shared.monitoring.local_training", "--model", "{model}",
        "--rows", "1500", "--seed", "2", "--shift", "1.0"]))
    bus = Bus(stack["storage"])
    reactions = Reactions(ledgers=LedgerStore.connect(stack["storage"]),
                          publish=bus.publish, policy_for=lambda name: policy,
                          rollout_record=lambda name: None,
                          launcher=lambda name, chosen: launcher_for(
                              name, chosen, Settings.from_env({}), local_runner=runner))
    result = handle(drift[0].to_json().encode(), reactions)
    assert result["retraining"]["action"] == "start"
    status = runner.wait(result["retraining"]["run_id"], timeout=240)
    log = (runner.runs_dir / f"{result['retraining']['run_id']}.log").read_text()
    assert status["status"] == "succeeded", log

    client = MlflowClient()
    second = client.get_model_version(model, "2")
    tags = second.tags
    assert tags["gatehouse.retraining.alert_fingerprint"] == drift[0].data.fingerprint
    assert tags["gatehouse.retraining.window"] == str(window)
    assert {"dataset_version", "feature_store_table", "team"} <= set(tags)
    # Registering it is what runs the gates again: model_version.created goes to run-gates.
    assert handler_queues("model_version.created") == (RUN_GATES,)
