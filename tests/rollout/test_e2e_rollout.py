"""End to end on the embedded stack: a real `mlflow server` (models on moto's S3), the embedded
serving server (its own process, loading versions from the registry), Azurite for the state,
queues and idempotency - and the rollout handlers called directly, as the host would call them.
"""

from __future__ import annotations

import html
import json
import os
import re
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import azure.functions as func
import pytest
import requests

from functions import rollout as handlers
from shared.dev import devstack
from shared.events import Decision, Envelope, GatesPassed, ModelVersionCreated
from shared.foundation import bus as bus_module
from shared.foundation.storage import decode_queue_message, free_port, queue_options, queue_service
from shared.rollout.links import make_token
from shared.serving.embedded_client import EmbeddedServing

pytestmark = pytest.mark.e2e
LINK_SECRET = "e2e-rollback-link-secret-0123456789"
COLUMNS = ["f0", "f1", "f2"]
EVENTS_QUEUE = f"gatehouse-events-e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def mlflow_env(mlflow_server, moto_s3):
    env = {**devstack.mlflow_client_env(moto_s3.url), "MLFLOW_TRACKING_URI": mlflow_server.url}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def model_name(mlflow_env):
    """Six registered versions of one small scikit-learn model; v1 is the champion."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    name = f"fraud-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=COLUMNS)
    labels = (frame["f0"] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    for seed in range(6):
        model = LogisticRegression(C=1.0 + seed).fit(frame, labels)
        with mlflow.start_run():
            mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                     signature=infer_signature(frame, model.predict(frame)),
                                     pip_requirements=["scikit-learn"],
                                     serialization_format="cloudpickle")
    MlflowClient().set_registered_model_alias(name, "champion", "1")
    return name


@pytest.fixture(scope="module")
def embedded_serving(server_logs, mlflow_env, tmp_path_factory):
    port = free_port()
    payloads = tmp_path_factory.mktemp("payloads") / "payloads.sqlite"
    server = devstack.ManagedProcess(
        "embedded-serving", [sys.executable, "-m", "shared.serving.embedded", "--port", str(port),
                             "--payload-log", str(payloads)],
        {**mlflow_env, "PYTHONUNBUFFERED": "1"}, port, server_logs).start(timeout=120)
    yield server
    server.stop()


@pytest.fixture
def stack(storage_env, embedded_serving, model_name, tmp_path, monkeypatch):
    """Environment of the handlers: storage, serving URL, link secret and a fast policy."""
    from shared.policy import current_policy

    policy = tmp_path / "policy.toml"
    policy.write_text(f'''
[models."{model_name}".rollout]
steps = [10, 50, 100]
min_bake_seconds = 1
min_requests_per_step = 12
warmup_seconds = 0
max_warmup_seconds = 0
max_p99_latency_ratio = 3.0   # a shared test machine's latency noise is not the model's
max_extensions = 1
error_margin_absolute = 0.2     # promotion on a few hundred requests: wide margins
latency_tail_share = 0.5
replay_sample_size = 5
shadow_step = false   # the replay path here; the shadow step: tests/rollout/test_quality.py
''')
    monkeypatch.setenv("GATEHOUSE_POLICY_PATH", str(policy))
    monkeypatch.setenv("GATEHOUSE_SERVING_URL", embedded_serving.url)
    monkeypatch.setenv("GATEHOUSE_ROLLBACK_LINK_SECRET", LINK_SECRET)
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    # A private events queue: a Functions host running elsewhere in the session (its router
    # drains gatehouse-events) cannot take these events before the assertions read them.
    monkeypatch.setattr(bus_module, "GATEHOUSE_EVENTS", EVENTS_QUEUE)
    current_policy.cache_clear()
    yield {"endpoint": model_name, "model": model_name,
           "serving": EmbeddedServing(embedded_serving.url), "url": embedded_serving.url}
    current_policy.cache_clear()


# ---- helpers ----

def drive(url: str, endpoint: str, count: int) -> None:
    body = {"dataframe_split": {"columns": COLUMNS, "data": [[0.3, -0.2, 1.1]]}}

    def one(_):
        return requests.post(f"{url}/serving-endpoints/{endpoint}/invocations", json=body,
                             headers={"X-Request-Id": uuid.uuid4().hex}, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))


def gates_passed(model: str, version: str) -> Envelope:
    return Envelope.wrap(GatesPassed(model_name=model, version=version, decision=Decision(
        actor="gate-suite", reason="all blocking gates passed")), source="/tests/gates")


def queue_message(envelope: Envelope) -> func.QueueMessage:
    return func.QueueMessage(id=uuid.uuid4().hex, body=envelope.to_json().encode("utf-8"))


def http(method: str, route: str, *, route_params=None, params=None, body=None, headers=None):
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body or b"")
    return func.HttpRequest(method, f"http://localhost/api/{route}", headers=headers or {},
                            params=params or {}, route_params=route_params or {}, body=data)


def published(storage: str, model: str) -> list[Envelope]:
    """Every event Gatehouse published about `model` (read without consuming)."""
    client = queue_service(storage).get_queue_client(EVENTS_QUEUE)
    encoding = queue_options().message_encoding
    found = {}
    messages = list(client.receive_messages(messages_per_page=32, visibility_timeout=30))
    for message in messages:  # looked at, not taken: visible again at once
        client.update_message(message, visibility_timeout=0)
    for message in messages:
        envelope = Envelope.from_json(decode_queue_message(message.content, encoding))
        if getattr(envelope.data, "model_name", None) == model:
            found[envelope.id] = envelope
    return sorted(found.values(), key=lambda e: e.time)


def kinds(storage: str, model: str, version: str) -> list[str]:
    return [e.data.kind for e in published(storage, model) if e.data.version == version]


def detail(endpoint: str) -> dict:
    reply = handlers.get_rollout(http("GET", f"rollouts/{endpoint}",
                                      route_params={"endpoint": endpoint}))
    assert reply.status_code == 200
    return json.loads(reply.get_body())


def ramp_until(stack, done, rounds: int = 30, per_round: int = 200) -> dict:
    for _ in range(rounds):
        started = time.monotonic()
        drive(stack["url"], stack["endpoint"], per_round)
        time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))  # the policy's minimum bake
        reply = handlers.ramp_endpoint(http("POST", f"rollouts/{stack['endpoint']}/ramp",
                                            route_params={"endpoint": stack["endpoint"]}))
        assert reply.status_code == 200, reply.get_body()
        state = json.loads(reply.get_body())
        if done(state):
            return state
    raise AssertionError(f"rollout did not finish: {state}")


def rollback_request(storage: str, model: str, version: str) -> Envelope:
    (envelope,) = [e for e in published(storage, model)
                   if e.data.kind == "rollout.rollback_requested" and e.data.version == version]
    return envelope


# ---- the flows (in order: each starts from the champion the previous one left) ----

def test_good_challenger_is_ramped_to_100_percent_and_promoted(stack, storage_env):
    from shared.registry.client import Registry

    endpoint, model, serving = stack["endpoint"], stack["model"], stack["serving"]
    serving.set_traffic(endpoint, model, {"1": 100})
    drive(stack["url"], endpoint, 20)  # live payloads for the replay

    handlers.start_canary(queue_message(gates_passed(model, "2")))
    state = serving.state(endpoint)
    assert state.routes == {"1": 90, "2": 10}
    record = detail(endpoint)
    assert record["active"]["phase"] == "canary"
    assert "replayed 5 recent live payloads" in record["history"][-1]["reason"]

    final = ramp_until(stack, lambda s: s["champion"] == "2")
    assert final["active"] is None and final["last"]["phase"] == "promoted"
    # Promoted: all traffic on v2, v1 still deployable at 0% for the rollback window.
    assert serving.state(endpoint).routes == {"2": 100, "1": 0}
    registry = Registry()
    assert registry.version_by_alias(model, "champion").version == "2"
    assert registry.version_by_alias(model, "challenger") is None
    assert registry.version(model, "1").tags["gatehouse.archived"] == "true"
    assert registry.version(model, "2").tags["gatehouse.rollout.phase"] == "promoted"
    assert kinds(storage_env, model, "2") == [
        "rollout.canary_started", "rollout.traffic_ramped", "rollout.traffic_ramped",
        "rollout.promoted"]
    history = detail(endpoint)["history"]
    # An inconclusive look (a noisy p99 on few requests) may extend a step's bake.
    actions = [h["action"] for h in history]
    assert [a for a in actions if a != "extend"] == ["create", "canary", "advance", "promote"]
    judged = [h for h in history if h["action"] in ("advance", "promote", "extend")]
    for entry in judged:
        assert entry["actor"] == "gatehouse" and entry["figures"]["challenger_requests"] >= 12
        assert {t["name"].split(":")[0] for t in entry["tests"]} >= {"errors", "latency"}
    # Starting the same event again is harmless (idempotent per event id and per version).
    handlers.start_canary(queue_message(gates_passed(model, "2")))
    assert detail(endpoint)["champion"] == "2"


def test_challenger_with_injected_errors_is_rolled_back_automatically(stack, storage_env):
    from shared.registry.client import Registry

    endpoint, model, serving = stack["endpoint"], stack["model"], stack["serving"]
    handlers.start_canary(queue_message(gates_passed(model, "3")))
    assert serving.state(endpoint).routes == {"2": 90, "3": 10}
    serving.set_faults(endpoint, {"3": {"error_rate": 0.6}})

    state = ramp_until(stack, lambda s: s["active"] and s["active"]["phase"] == "rolling_back")
    verdict = state["verdict"]
    assert verdict["action"] == "rollback"
    assert "errors: challenger error rate" in verdict["reason"] or \
        "error SLA" in verdict["reason"]
    assert any(t["significant"] for t in verdict["tests"])

    handlers.open_rollback(queue_message(rollback_request(storage_env, model, "3")))
    assert serving.state(endpoint).routes == {"2": 100}
    record = detail(endpoint)
    assert record["active"] is None and record["last"]["phase"] == "rolled_back"
    assert record["champion"] == "2"
    registry = Registry()
    assert registry.version_by_alias(model, "champion").version == "2"
    assert registry.version_by_alias(model, "challenger") is None
    assert registry.version(model, "3").tags["gatehouse.rolled_back"] == "true"
    assert kinds(storage_env, model, "3")[-2:] == ["rollout.rollback_requested",
                                                   "rollout.rollback_completed"]
    # The same request delivered again does nothing more.
    handlers.open_rollback(queue_message(rollback_request(storage_env, model, "3")))
    assert kinds(storage_env, model, "3").count("rollout.rollback_completed") == 1


def test_manual_rollback_through_the_route_works_once(stack, storage_env):
    endpoint, model, serving = stack["endpoint"], stack["model"], stack["serving"]
    handlers.start_canary(queue_message(gates_passed(model, "4")))
    assert serving.state(endpoint).routes == {"2": 90, "4": 10}

    route = f"rollouts/{endpoint}/rollback"
    for bad, status in ((b"not json", 400), ({"actor": "alice"}, 400),
                        ({"actor": "a", "reason": "r", "force": True}, 400)):
        reply = handlers.rollback_endpoint(http("POST", route, body=bad,
                                                route_params={"endpoint": endpoint}))
        assert reply.status_code == status and json.loads(reply.get_body())["error"]
    unknown = handlers.rollback_endpoint(http("POST", "rollouts/nope/rollback",
                                              body={"actor": "a", "reason": "r"},
                                              route_params={"endpoint": "nope"}))
    assert unknown.status_code == 404

    body = {"actor": "alice@example.com", "reason": "customer complaints"}
    first = handlers.rollback_endpoint(http("POST", route, body=body,
                                            route_params={"endpoint": endpoint}))
    assert first.status_code == 202, first.get_body()
    second = handlers.rollback_endpoint(http("POST", route, body=body,
                                             route_params={"endpoint": endpoint}))
    assert second.status_code == 409 and "already" in json.loads(second.get_body())["error"]

    handlers.open_rollback(queue_message(rollback_request(storage_env, model, "4")))
    assert serving.state(endpoint).routes == {"2": 100}
    third = handlers.rollback_endpoint(http("POST", route, body=body,
                                            route_params={"endpoint": endpoint}))
    assert third.status_code == 409 and "nothing to roll back" in json.loads(
        third.get_body())["error"]
    history = detail(endpoint)["history"]
    assert history[-2]["actor"] == "alice@example.com"
    assert history[-2]["reason"] == "customer complaints"


def test_signed_link_rolls_back_once_and_only_once(stack, storage_env):
    endpoint, model, serving = stack["endpoint"], stack["model"], stack["serving"]
    handlers.start_canary(queue_message(gates_passed(model, "5")))
    active = detail(endpoint)["active"]
    assert active["challenger"] == "5"

    def click(token, method="POST"):
        reply = handlers.rollback_link(http(method, "rollouts/rollback", params={"token": token}))
        return reply.status_code, json.loads(reply.get_body())

    stale = make_token(LINK_SECRET, endpoint, "an-older-rollout", now=time.time())
    assert click(stale)[0] == 409 and click(stale, "GET")[0] == 409
    assert click("garbage")[0] == 400 and click("garbage", "GET")[0] == 400
    assert click(make_token("another-secret-0123456789", endpoint, active["id"],
                            now=time.time()))[0] == 401
    assert click(make_token(LINK_SECRET, endpoint, active["id"], now=time.time() - 7200,
                            ttl_seconds=60))[0] == 410

    token = make_token(LINK_SECRET, endpoint, active["id"], now=time.time())
    # Opening the link (a person, or a chat app's link preview) only shows what it would do.
    for _ in range(3):
        status, preview = click(token, "GET")
        assert status == 200
        assert (preview["version"], preview["restores"], preview["rollout_id"]) == (
            "5", active["champion"], active["id"])
    assert detail(endpoint)["active"]["phase"] == active["phase"]

    status, body = click(token)
    assert status == 202 and body["version"] == "5"
    assert click(token) == (410, {"error": "this rollback link was used already"})
    assert click(token, "GET") == (410, {"error": "this rollback link was used already"})

    handlers.open_rollback(queue_message(rollback_request(storage_env, model, "5")))
    assert serving.state(endpoint).routes == {"2": 100}
    assert detail(endpoint)["last"]["phase"] == "rolled_back"
    assert detail(endpoint)["history"][-2]["actor"] == "rollback-link"


def test_signed_link_in_a_browser_confirms_with_a_form(stack, storage_env):
    endpoint, model = stack["endpoint"], stack["model"]
    handlers.start_canary(queue_message(gates_passed(model, "6")))
    active = detail(endpoint)["active"]
    token = make_token(LINK_SECRET, endpoint, active["id"], now=time.time())
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

    page = handlers.rollback_link(http("GET", "rollouts/rollback", params={"token": token},
                                       headers=browser))
    assert page.status_code == 200 and page.mimetype == "text/html"
    text = page.get_body().decode()
    assert '<form method="post">' in text and f"Roll back v6 on {endpoint}" in text
    form_token = re.search(r'name="token" value="([^"]+)"', text).group(1)
    assert html.unescape(form_token) == token

    # The button posts the form body to the page's own URL, here without the query string.
    done = handlers.rollback_link(http(
        "POST", "rollouts/rollback", body=urlencode({"token": token}).encode(),
        headers={**browser, "Content-Type": "application/x-www-form-urlencoded"}))
    assert done.status_code == 202 and done.mimetype == "text/html"
    assert "rolling back v6" in done.get_body().decode()
    again = handlers.rollback_link(http("GET", "rollouts/rollback", params={"token": token},
                                        headers=browser))
    assert again.status_code == 410 and "used already" in again.get_body().decode()
    handlers.open_rollback(queue_message(rollback_request(storage_env, model, "6")))
    assert detail(endpoint)["last"]["phase"] == "rolled_back"


def test_listing_and_unknown_endpoints(stack):
    listing = handlers.list_rollouts(http("GET", "rollouts"))
    assert stack["endpoint"] in [r["endpoint"] for r in json.loads(listing.get_body())["rollouts"]]
    missing = handlers.get_rollout(http("GET", "rollouts/nope", route_params={"endpoint": "nope"}))
    assert missing.status_code == 404
    with pytest.raises(ValueError, match="not gates.passed"):
        handlers.start_canary(queue_message(Envelope.wrap(
            ModelVersionCreated(model_name="x", version="1"), source="/tests")))
