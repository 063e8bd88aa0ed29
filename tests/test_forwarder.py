"""The Databricks model-update-trigger task, run the way a spark_python_task runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import requests
import yaml

from shared import events, forwarder
from shared.channels.outbox import OutboxChannel
from shared.foundation.storage import PROJECT_ROOT
from shared.intake.signatures import signed_headers


def test_each_condition_maps_to_the_webhook_events():
    updates = [{"full_name": "main.risk.fraud", "version": 3, "alias_name": "champion"}]
    assert forwarder.events_for("MODEL_CREATED", updates) == [
        events.RegisteredModelCreated(model_name="main.risk.fraud", registry="unity-catalog")]
    assert forwarder.events_for("MODEL_VERSION_READY", updates) == [
        events.ModelVersionCreated(model_name="main.risk.fraud", version="3",
                                   registry="unity-catalog")]
    assert forwarder.events_for("MODEL_ALIAS_SET", updates) == [
        events.ModelVersionAliasCreated(model_name="main.risk.fraud", alias="champion",
                                        version="3", registry="unity-catalog")]


@pytest.mark.parametrize("condition,updates,message", [
    ("MODEL_DELETED", [], "unknown trigger condition"),
    ("MODEL_VERSION_READY", [{"version": 1}], "has no full_name"),
    ("MODEL_VERSION_READY", [{"full_name": "a.b.c"}], "has no version"),
    ("MODEL_ALIAS_SET", [{"full_name": "a.b.c", "version": 2}], "has no alias_name"),
])
def test_bad_batches_are_explained(condition, updates, message):
    with pytest.raises(ValueError, match=message):
        forwarder.events_for(condition, updates)


def test_delivery_ids_are_stable_per_run_and_update():
    payload = forwarder.events_for("MODEL_VERSION_READY", [{"full_name": "a.b.c", "version": 1}])[0]
    assert forwarder.delivery_id("7", payload) == forwarder.delivery_id("7", payload)
    assert forwarder.delivery_id("7", payload) != forwarder.delivery_id("8", payload)


def run_task(url: str, secret: str, updates: list, run_id: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "shared" / "forwarder.py"), "--condition",
         "MODEL_VERSION_READY", "--updates", json.dumps(updates), "--run-id", run_id,
         "--url", url], capture_output=True, text=True, timeout=120, cwd="/",
        env={**os.environ, "GATEHOUSE_FORWARDER_SECRET": secret})


def test_forwarded_events_reach_the_app_once(function_host, webhook_secret, outbox_path):
    model = f"main.risk.fwd{uuid.uuid4().hex[:6]}"
    url = f"{function_host.url}/api/registry/forwarded"
    first = run_task(url, webhook_secret, [{"full_name": model, "version": 3}], "run-1")
    assert first.returncode == 0, first.stderr
    again = run_task(url, webhook_secret, [{"full_name": model, "version": 3}], "run-1")
    assert json.loads(again.stdout)["event_ids"] == json.loads(first.stdout)["event_ids"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        notes = [n for n in OutboxChannel(outbox_path).read() if n.get("model_name") == model]
        if notes:
            break
        time.sleep(0.2)
    assert len(notes) == 1 and notes[0]["facts"]["registry"] == "unity-catalog"


def test_forged_or_non_registry_forwarded_events_are_refused(function_host, webhook_secret):
    url = f"{function_host.url}/api/registry/forwarded"
    assert run_task(url, "wrong-secret", [{"full_name": "a.b.c", "version": 1}],
                    "r").returncode != 0
    alert = events.Envelope.wrap(events.MonitoringAlert(
        alert_kind=events.AlertKind.OTHER, source="x", title="t", fingerprint="f"), source="/t")
    body = alert.to_json().encode()
    headers = {"Content-Type": "application/json",
               **signed_headers(webhook_secret, "d-1", int(time.time()), body)}
    reply = requests.post(url, data=body, headers=headers, timeout=10)
    assert reply.status_code == 400 and "only registry events" in reply.json()["error"]


def test_bundle_jobs_are_valid_job_settings():
    from databricks.sdk.service.jobs import JobSettings, ModelTriggerConfigurationCondition

    bundle = yaml.safe_load((PROJECT_ROOT / "infra" / "databricks" /
                             "gatehouse_forwarder.job.yml").read_text())
    for job in bundle["resources"]["jobs"].values():
        settings = JobSettings.from_dict(job)
        assert settings.trigger.model.condition in ModelTriggerConfigurationCondition
        [task] = settings.tasks
        parameters = task.spark_python_task.parameters
        condition = parameters[parameters.index("--condition") + 1]
        assert condition == settings.trigger.model.condition.value
        assert job["parameters"][0]["default"] == "{{job.trigger.model.updates}}"
        assert (PROJECT_ROOT / "infra" / "databricks" / task.spark_python_task.python_file
                ).resolve() == PROJECT_ROOT / "shared" / "forwarder.py"
