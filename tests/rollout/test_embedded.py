"""The embedded serving server with real MLflow pyfunc models (saved locally, no registry)."""

from __future__ import annotations

import time
import uuid
from collections import Counter

import numpy as np
import pytest
import requests

from shared.rollout.judge import quantile
from shared.rollout.replay import replay
from shared.serving.base import ServingError
from shared.serving.embedded import ServingHost, pick_version, serve
from shared.serving.embedded_client import EmbeddedServing
from shared.serving.payload_log import PayloadLog

COLUMNS = ["f0", "f1", "f2"]


def _save_model(path, n_features: int, seed: int):
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(100, n_features)),
                         columns=[f"f{i}" for i in range(n_features)])
    labels = (frame["f0"] > 0).astype(int)
    model = LogisticRegression().fit(frame, labels)
    mlflow.sklearn.save_model(model, str(path),
                              signature=infer_signature(frame, model.predict(frame)),
                              pip_requirements=["scikit-learn"],  # skips slow inference
                              serialization_format="cloudpickle")
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return {"1": _save_model(base / "v1", 3, 1), "2": _save_model(base / "v2", 3, 2),
            "3": _save_model(base / "v3", 4, 3)}  # v3 wants a fourth column


@pytest.fixture(scope="module")
def loader(models):
    import mlflow.pyfunc

    def load(model_name, version):
        if version not in models:
            raise LookupError(f"no version {version}")
        return mlflow.pyfunc.load_model(models[version])
    return load


@pytest.fixture(scope="module")
def server(tmp_path_factory, loader):
    path = tmp_path_factory.mktemp("serving") / "payloads.sqlite"
    http, host = serve(0, payload_log=path, loader=loader)
    yield f"http://127.0.0.1:{http.server_port}", host, path
    http.shutdown()
    http.server_close()


@pytest.fixture
def endpoint(server):
    url, host, _ = server
    name = f"fraud-{uuid.uuid4().hex[:6]}"
    EmbeddedServing(url).set_traffic(name, "fraud", {"1": 50, "2": 50})
    return name


def invoke(url, name, body, request_id=None):
    headers = {"X-Request-Id": request_id} if request_id else {}
    return requests.post(f"{url}/serving-endpoints/{name}/invocations", json=body,
                         headers=headers, timeout=30)


def test_pick_version_is_deterministic_and_proportional():
    routes = {"1": 95, "2": 5}
    assert all(pick_version(routes, f"r{i}") == pick_version(routes, f"r{i}") for i in range(50))
    share = Counter(pick_version(routes, f"r{i}") for i in range(20_000))["2"] / 20_000
    assert 0.04 < share < 0.06
    assert Counter(pick_version({"1": 0, "2": 100}, f"r{i}") for i in range(500)) == {"2": 500}


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": COLUMNS, "data": [[0.1, 0.2, 0.3], [-1.0, 0.0, 1.0]]}},
    {"dataframe_records": [{"f0": 0.1, "f1": 0.2, "f2": 0.3}, {"f0": -1.0, "f1": 0, "f2": 1}]},
    {"instances": [{"f0": 0.1, "f1": 0.2, "f2": 0.3}, {"f0": -1.0, "f1": 0.0, "f2": 1.0}]},
    {"inputs": {"f0": [0.1, -1.0], "f1": [0.2, 0.0], "f2": [0.3, 1.0]}},
])
def test_databricks_request_shapes_get_predictions(server, endpoint, body):
    url, _, _ = server
    reply = invoke(url, endpoint, body, request_id="same-id")
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["predictions"]) == 2
    assert reply.headers["X-Request-Id"] == "same-id"
    again = invoke(url, endpoint, body, request_id="same-id")
    assert again.headers["X-Gatehouse-Served-Version"] == reply.headers[
        "X-Gatehouse-Served-Version"]


def test_every_request_is_in_the_payload_log(server, endpoint):
    url, _, path = server
    body = {"dataframe_split": {"columns": COLUMNS, "data": [[1.0, 2.0, 3.0]]}}
    ok = invoke(url, endpoint, body, request_id="logged-1")
    bad = invoke(url, endpoint, {"dataframe_split": {"columns": ["x"], "data": [[1]]}},
                 request_id="logged-2")
    assert ok.status_code == 200 and bad.status_code == 400
    assert bad.json()["error_code"] and "message" in bad.json()
    records = {r.request_id: r for r in PayloadLog(path).records(endpoint=endpoint)}
    first, second = records["logged-1"], records["logged-2"]
    assert first.ok and first.input_json() == body
    assert first.output_json()["predictions"] == ok.json()["predictions"]
    assert first.version == ok.headers["X-Gatehouse-Served-Version"]
    assert first.latency_ms > 0 and first.ts <= time.time()
    assert second.status == 400 and second.outputs is None and second.error
    assert [r.request_id for r in PayloadLog(path).records(endpoint=endpoint, ok_only=True)] == [
        "logged-1"]


def test_health_per_version_and_fault_injection(server, endpoint):
    url, _, _ = server
    client = EmbeddedServing(url)
    client.set_faults(endpoint, {"2": {"error_rate": 1.0, "added_latency_ms": 120}})
    since = time.time()
    body = {"dataframe_split": {"columns": COLUMNS, "data": [[0.0, 0.0, 0.0]]}}
    statuses = Counter()
    for i in range(24):
        reply = invoke(url, endpoint, body, request_id=f"h{i}")
        statuses[(reply.headers["X-Gatehouse-Served-Version"], reply.status_code)] += 1
    assert set(statuses) == {("1", 200), ("2", 500)}
    report = client.health(endpoint, since)
    one, two = report.versions["1"], report.versions["2"]
    assert (one.requests, one.errors) == (statuses[("1", 200)], 0)
    assert (two.requests, two.errors) == (statuses[("2", 500)], statuses[("2", 500)])
    assert min(v for v, _ in two.latencies_ms) >= 120 > quantile(one.latencies_ms, 0.5)
    assert client.health(endpoint, time.time() + 10).versions == {}


def test_config_api_refuses_bad_routes_and_unloadable_versions(server, endpoint):
    url, _, _ = server
    client = EmbeddedServing(url)
    for routes in ({"1": 60, "2": 30}, {"1": 100, "9": 0}):
        reply = requests.put(f"{url}/gatehouse/endpoints/{endpoint}/config",
                             json={"model_name": "fraud", "routes": routes}, timeout=30)
        assert reply.status_code == 400 and reply.json()["message"]
    assert client.state(endpoint).routes == {"1": 50, "2": 50}
    with pytest.raises(ServingError, match="no version 9"):
        client.set_traffic(endpoint, "fraud", {"1": 50, "9": 50})
    assert client.state("missing") is None
    assert invoke(url, "missing", {"inputs": [1]}).status_code == 404
    assert requests.put(f"{url}/gatehouse/endpoints/{endpoint}/faults",
                        json={"2": {"error_rate": 2}}, timeout=10).status_code == 400
    assert requests.get(f"{url}/serving-endpoints/{endpoint}/invocations",
                        timeout=10).status_code == 405


def test_configs_survive_a_restart(server, endpoint, loader):
    _, _, path = server
    restarted = ServingHost(path, loader=loader)
    assert restarted.endpoint(endpoint).routes == {"1": 50, "2": 50}


def test_replay_of_recent_payloads(server, endpoint, loader):
    url, _, _ = server
    body = {"dataframe_split": {"columns": COLUMNS, "data": [[0.5, 0.5, 0.5]]}}
    for i in range(3):
        invoke(url, endpoint, body, request_id=f"replay-{i}")
    payloads = EmbeddedServing(url).recent_payloads(endpoint, 2)
    assert payloads == [body, body]
    assert replay(payloads, loader("fraud", "2")).ok
    broken = replay(payloads, loader("fraud", "3"))
    assert not broken.ok and broken.failed == 2 and "f3" in broken.detail
    assert replay([], loader("fraud", "3")).ok


def test_mirroring_scores_every_request_with_the_shadow_and_returns_only_the_served_answer(
        server, loader):
    url, _, path = server
    client = EmbeddedServing(url)
    name = f"mirror-{uuid.uuid4().hex[:6]}"
    client.set_traffic(name, "fraud", {"1": 100})
    state = client.set_shadow(name, "fraud", "2")
    assert state.shadow == "2" and client.state(name).shadow == "2"
    client.set_faults(name, {"2": {"error_rate": 1.0}})   # the shadow fails every request
    since = time.time()
    body = {"dataframe_split": {"columns": COLUMNS, "data": [[0.2, 0.1, -0.3]]}}
    replies = [invoke(url, name, body, request_id=f"m{i}") for i in range(6)]
    assert all(r.status_code == 200 and r.headers["X-Gatehouse-Served-Version"] == "1"
               for r in replies)   # callers get the champion's answers, never the shadow's error
    time.sleep(0.3)   # the last mirror is scored after its caller has the answer
    records = client.records(name, since, 100)
    served = {r.request_id for r in records if not r.shadow and r.version == "1"}
    mirrored = {r.request_id for r in records if r.shadow and r.version == "2"}
    assert served == mirrored == {f"m{i}" for i in range(6)}
    assert all(r.status == 500 for r in records if r.shadow)
    # Health, the monitor and the replay see the served requests only.
    assert set(client.health(name, since).versions) == {"1"}
    assert {r.version for r in PayloadLog(path).records(endpoint=name)} == {"1"}
    # The mirror survives a restart and a traffic change; None stops it.
    assert ServingHost(path, loader=loader).endpoint(name).shadow == "2"
    client.set_traffic(name, "fraud", {"1": 90, "2": 10})
    assert client.state(name).shadow == "2"
    assert client.set_shadow(name, "fraud", None).shadow is None
    invoke(url, name, body, request_id="after")
    time.sleep(0.3)
    assert not [r for r in client.records(name, since, 100) if r.request_id == "after"
                and r.shadow]


def test_mirroring_api_refuses_bad_requests(server, endpoint):
    url, _, _ = server
    shadow = f"{url}/gatehouse/endpoints/{endpoint}/shadow"
    for body, found in (({"model_name": "churn", "version": "2"}, "serves fraud"),
                        ({"model_name": "fraud", "version": ["2"]}, "version is"),
                        ({"model_name": "fraud", "version": "9"}, "no version 9")):
        reply = requests.put(shadow, json=body, timeout=30)
        assert reply.status_code == 400 and found in reply.json()["message"], reply.text
    reply = requests.get(f"{url}/gatehouse/endpoints/{endpoint}/records",
                         params={"since": "yesterday"}, timeout=10)
    assert reply.status_code == 400 and "epoch seconds" in reply.json()["message"]


def test_a_payload_log_from_before_the_shadow_step_gains_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE payloads (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,"
                   " endpoint TEXT NOT NULL, request_id TEXT NOT NULL, model_name TEXT, "
                   "version TEXT, inputs TEXT NOT NULL, outputs TEXT, latency_ms REAL NOT NULL, "
                   "status INTEGER NOT NULL, error TEXT)")
        db.execute("INSERT INTO payloads (ts, endpoint, request_id, version, inputs, latency_ms, "
                   "status) VALUES (1.0, 'e', 'old', '1', '{}', 3.0, 200)")
    [old] = PayloadLog(path).records(endpoint="e")
    assert old.request_id == "old" and old.shadow is False
