"""The rollout routes on a host with no serving backend configured: reading answers from the
store, an endpoint without a rollout is a 404, and only acting on a rollout is refused, with a
503 that names the settings to configure (never a 500)."""

from __future__ import annotations

import json
import time
import uuid

import azure.functions as func
import pytest

from functions import rollout as handlers
from shared.rollout import machine
from shared.rollout.links import make_token
from shared.rollout.policy import RolloutPolicy
from shared.rollout.store import Loaded, RolloutStore

LINK_SECRET = "routes-without-serving-secret-0123"


@pytest.fixture
def no_serving(storage_env, monkeypatch):
    for name in ("GATEHOUSE_SERVING_URL", "DATABRICKS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEHOUSE_ROLLBACK_LINK_SECRET", LINK_SECRET)
    return storage_env


def a_canary(storage: str) -> tuple[str, str]:
    endpoint = f"no-serving-{uuid.uuid4().hex[:8]}"
    step = machine.start(None, model_name="fraud", endpoint=endpoint, version="2", champion="1",
                         policy=RolloutPolicy(), now=time.time(), actor="gates", reason="passed")
    RolloutStore.connect(storage).save(Loaded(None, None), step.record, step.transitions)
    return endpoint, step.record.active.id


def call(handler, method: str, route: str, **parts) -> tuple[int, dict]:
    reply = handler(func.HttpRequest(method, f"http://localhost/api/{route}",
                                     **{"body": b"", **parts}))
    return reply.status_code, json.loads(reply.get_body())


def test_reading_needs_no_serving_backend(no_serving):
    endpoint, _ = a_canary(no_serving)
    status, listing = call(handlers.list_rollouts, "GET", "rollouts")
    assert status == 200 and endpoint in [r["endpoint"] for r in listing["rollouts"]]
    status, detail = call(handlers.get_rollout, "GET", f"rollouts/{endpoint}",
                          route_params={"endpoint": endpoint})
    assert status == 200 and detail["active"]["challenger"] == "2"
    assert [t["action"] for t in detail["history"]] == ["create"]


def test_an_endpoint_without_a_rollout_is_a_404_whatever_is_configured(no_serving):
    params = {"route_params": {"endpoint": "never-rolled-out"}}
    assert call(handlers.get_rollout, "GET", "rollouts/x", **params)[0] == 404
    assert call(handlers.ramp_endpoint, "POST", "rollouts/x/ramp", **params)[0] == 404
    assert call(handlers.rollback_endpoint, "POST", "rollouts/x/rollback",
                body=b'{"actor": "ana", "reason": "why"}', **params)[0] == 404


def test_acting_on_a_rollout_names_the_settings_to_configure(no_serving):
    endpoint, rollout_id = a_canary(no_serving)
    params = {"route_params": {"endpoint": endpoint}}
    for status, body in (
            call(handlers.ramp_endpoint, "POST", "rollouts/x/ramp", **params),
            call(handlers.rollback_endpoint, "POST", "rollouts/x/rollback",
                 body=b'{"actor": "ana", "reason": "why"}', **params),
            call(handlers.rollback_link, "GET", "rollouts/rollback", params={
                "token": make_token(LINK_SECRET, endpoint, rollout_id, now=time.time())})):
        assert status == 503, body
        assert "DATABRICKS_HOST" in body["error"] and "GATEHOUSE_SERVING_URL" in body["error"]
    status, _ = call(handlers.get_rollout, "GET", f"rollouts/{endpoint}", **params)
    assert status == 200  # nothing was changed


def test_a_bad_link_is_refused_without_a_serving_backend(no_serving):
    assert call(handlers.rollback_link, "GET", "rollouts/rollback",
                params={"token": "garbage"})[0] == 400
    forged = make_token("another-secret-0123456789", "e", "r", now=time.time())
    assert call(handlers.rollback_link, "POST", "rollouts/rollback",
                params={"token": forged})[0] == 401
