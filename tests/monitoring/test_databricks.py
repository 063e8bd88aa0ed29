"""databricks-sdk's real WorkspaceClient against the local Databricks peer: jobs run-now with an
idempotency token (retraining) and the monitor reading an inference table through SQL statement
execution (the SQL itself: test_warehouse.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from shared.foundation.settings import Settings
from shared.monitoring.policy import MonitoringPolicy, RetrainingPolicy
from shared.monitoring.reactions import launcher_for
from shared.monitoring.runners import DatabricksJobRunner, RunnerError
from shared.monitoring.sources import SourceError, quoted_table
from tests.monitoring.databricks_peer import TOKEN, DatabricksPeer

JOB_ID = 123456789
WAREHOUSE = "4b9b953939869799"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def peer():
    server = DatabricksPeer(chunk_rows=2, pending_polls=1).start()
    server.jobs.add(JOB_ID)
    server.warehouses.add(WAREHOUSE)
    yield server
    server.stop()


@pytest.fixture
def client(peer):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    return WorkspaceClient(config=Config(host=peer.url, token=TOKEN, auth_type="pat",
                                         retry_timeout_seconds=10))


PARAMETERS = {"model": "fraud", "reason": "feature_drift: PSI 0.31", "window": "5000000",
              "alert_fingerprint": "gatehouse:abc"}


def test_run_now_passes_job_parameters_and_honours_the_idempotency_token(peer, client):
    runner = DatabricksJobRunner(client)
    token = f"gh-{uuid.uuid4().hex}"
    first = runner.start(JOB_ID, PARAMETERS, token)
    again = runner.start(JOB_ID, PARAMETERS, token)
    assert first == again
    method, path, body = [r for r in peer.requests if r[1].endswith("run-now")][-1]
    assert (method, path) == ("POST", "/api/2.2/jobs/run-now")
    assert body == {"job_id": JOB_ID, "job_parameters": PARAMETERS, "idempotency_token": token}
    assert peer.runs[int(first)]["job_parameters"] == PARAMETERS
    other = runner.start(JOB_ID, PARAMETERS, f"gh-{uuid.uuid4().hex}")
    assert other != first


def test_run_state_decides_what_is_in_flight(peer, client):
    runner = DatabricksJobRunner(client)
    run_id = runner.start(JOB_ID, PARAMETERS, f"gh-{uuid.uuid4().hex}")
    assert runner.active([run_id, "999999"]) == {run_id}
    peer.runs[int(run_id)]["state"] = "TERMINATED"
    assert runner.active([run_id]) == set()


def test_an_unknown_job_is_a_clear_error(peer, client):
    with pytest.raises(RunnerError, match="Job 42 does not exist"):
        DatabricksJobRunner(client).start(42, PARAMETERS, "gh-x")


def test_the_peer_refuses_what_databricks_refuses(peer, client):
    api = client.api_client
    from databricks.sdk.errors import DatabricksError

    for body in ({"job_id": JOB_ID, "job_parameters": {"window": 5}},
                 {"job_id": JOB_ID, "idempotency_token": "x" * 65},
                 {"job_id": "123"}, {"job_id": JOB_ID, "jobparameters": {}}):
        with pytest.raises(DatabricksError):
            api.do("POST", "/api/2.2/jobs/run-now", body=body)


def test_the_launcher_uses_the_job_when_a_workspace_is_configured(peer):
    policy = MonitoringPolicy(retraining=RetrainingPolicy(
        job_id=JOB_ID, entrypoint="python -m shared.monitoring.local_training"))
    environ = {"DATABRICKS_HOST": peer.url, "DATABRICKS_TOKEN": TOKEN}
    launcher = launcher_for("fraud", policy, Settings.from_env(environ))
    assert isinstance(launcher.runner, DatabricksJobRunner)
    from shared.monitoring.retraining import PendingStart

    start = PendingStart(event_id="e", token=f"gh-{uuid.uuid4().hex}", parameters=PARAMETERS,
                         reason="r", alert_fingerprint="gatehouse:abc", decided_at=T0)
    assert launcher.start(start) == launcher.start(start)
    # Without a workspace the same policy runs the local entrypoint.
    assert launcher_for("fraud", policy, Settings.from_env({})).runner.name == "local"


# ---- statement execution (the summaries themselves: test_warehouse.py) ---------------------

@pytest.mark.parametrize("name", ["main.serving.x; DROP TABLE y", "a.b.c.d", "`x`", "a..b"])
def test_table_names_that_are_not_identifiers_never_reach_sql(name):
    with pytest.raises(SourceError, match="not a catalog.schema.table"):
        quoted_table(name, "fraud-prod")


def test_endpoint_placeholder_in_the_table_name():
    assert quoted_table("main.serving.{endpoint}_payload", "fraud-prod") == \
        "`main`.`serving`.`fraud-prod_payload`"


def gateway_row(i: int, at: float) -> tuple:
    """One AI Gateway inference-table row (version 3 of fraud, one scored row)."""
    moment = datetime.fromtimestamp(at, UTC)
    request = json.dumps({"dataframe_records": [{"amount": 1.0 + i, "age": 0.5}]})
    return (moment.date(), f"dbx-{i}", f"client-{i}", moment, 200, 1.0, 10 + i, request,
            json.dumps({"predictions": [[0.3, 0.7]]}), "entity-fraud-3", None, "svc@example.com")


def test_the_monitor_reads_each_policy_models_inference_table(peer, spark, storage_env,
                                                              monkeypatch):
    """The settings' wiring: DATABRICKS_HOST plus a model whose monitoring policy names its
    inference table and warehouse -> the monitor judges that endpoint from the table."""
    import shared.policy
    from shared.monitoring import adapters
    from shared.monitoring.service import Monitor, MonitorStateStore
    from shared.policy import Policy

    peer.spark = spark
    peer.create_served_entities()
    model = f"dbx{uuid.uuid4().hex[:6]}"
    window = int(T0 // 300) + 1
    start = window * 300.0
    peer.create_table(f"main.serving.{model}_payload", "ai_gateway",
                      [gateway_row(i, T0 + i) for i in range(5)]
                      + [gateway_row(i, start + i) for i in range(3)])
    monkeypatch.setattr(shared.policy, "current_policy", lambda: Policy({"models": {model: {}}}))
    monkeypatch.setattr(adapters, "monitoring_policy_for", lambda name: MonitoringPolicy(
        inference_table="main.serving.{endpoint}_payload", warehouse_id=WAREHOUSE,
        min_requests=1))
    traffic = adapters.traffic(Settings.from_env({"DATABRICKS_HOST": peer.url,
                                                  "DATABRICKS_TOKEN": TOKEN}))
    # the rollout policy's default endpoint (the model's name), judged traffic or not
    assert traffic.endpoints(0.0, 1.0) == {model}
    published = []
    monitor = Monitor(traffic=traffic, states=MonitorStateStore.connect(storage_env),
                      publish=published.append,
                      policy_for=lambda name: MonitoringPolicy(min_requests=1))
    summary = monitor.run(start + 300 + 1)
    [judged] = summary["endpoints"][model]["windows"]
    assert judged["window"] == window and judged["figures"]["requests"] == 3
    assert judged["version"] == "3" and judged["figures"]["rows"] == 3
