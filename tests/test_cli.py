"""The operator CLI, run as a person would: `python -m shared.ops.cli ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import pytest

from functions import router
from shared.foundation.bus import Bus
from shared.foundation.queues import NOTIFICATIONS, REGISTRY_EVENTS
from shared.foundation.storage import PROJECT_ROOT, decode_queue_message
from shared.ops import cli


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shared.ops.cli", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def mlflow_webhook(model: str) -> bytes:
    return json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": datetime.now(UTC).isoformat(),
                       "data": {"name": model, "version": "7", "source": "models:/x",
                                "run_id": None, "tags": {}, "description": None}}).encode()


def test_help_explains_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ("replay", "poison", "webhooks", "audit", "poll", "examples:"):
        assert word in result.stdout


def test_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    result = run_cli("replay", str(bad), "--format", "mlflow", "--dry-run")
    assert result.returncode == 2 and "not valid JSON" in result.stderr


def test_dry_run_prints_decisions_and_touches_nothing(tmp_path, storage):
    model = f"cli-{uuid.uuid4().hex[:6]}"
    path = tmp_path / "hook.json"
    path.write_bytes(mlflow_webhook(model))
    before = Bus(storage).depth(REGISTRY_EVENTS)
    result = run_cli("replay", str(path), "--format", "mlflow", "--dry-run",
                     env={"AzureWebJobsStorage": storage})
    assert result.returncode == 0, result.stderr
    decided = json.loads(result.stdout)
    assert decided["dry_run"] is True and decided["handler_queues"] == ["run-gates"]
    assert decided["notification"]["title"] == f"{model} v7 registered"
    assert Bus(storage).depth(REGISTRY_EVENTS) == before


def test_live_replay_makes_the_decisions_the_dry_run_showed(tmp_path, storage_env):
    model = f"cli-{uuid.uuid4().hex[:6]}"
    envelope = cli.load_event(mlflow_webhook(model), "mlflow")
    path = tmp_path / "event.json"
    path.write_text(envelope.to_json())
    dry = json.loads(run_cli("replay", str(path), "--dry-run").stdout)
    live = run_cli("replay", str(path), env={"AzureWebJobsStorage": storage_env})
    assert live.returncode == 0, live.stderr
    bus = Bus(storage_env)
    queue = bus._queue(REGISTRY_EVENTS)
    mine = [m for m in queue.receive_messages(max_messages=32)
            if json.loads(decode_queue_message(m.content, bus.encoding))["id"] == envelope.id]
    assert len(mine) == 1
    result = router.route(decode_queue_message(mine[0].content, bus.encoding), REGISTRY_EVENTS)
    queue.delete_message(mine[0])
    assert result["forwarded_to"] == dry["handler_queues"] + [NOTIFICATIONS]
    notes = [n for n in bus.peek(NOTIFICATIONS) if n.data.about_event_id == envelope.id]
    assert notes[0].data.title == dry["notification"]["title"]
    assert notes[0].data.text == dry["notification"]["text"]


def test_poison_list_and_redrive(storage_env):
    from azure.storage.queue import QueueServiceClient

    service = QueueServiceClient.from_connection_string(storage_env)
    name = f"cli-{uuid.uuid4().hex[:8]}"
    service.create_queue(name)
    service.create_queue(f"{name}-poison")
    service.get_queue_client(f"{name}-poison").send_message("aGVsbG8=")
    listed = run_cli("poison", "list", name, "--json", env={"AzureWebJobsStorage": storage_env})
    assert json.loads(listed.stdout.splitlines()[0])["content"] == "aGVsbG8="
    moved = run_cli("poison", "redrive", name, env={"AzureWebJobsStorage": storage_env})
    assert "moved 1 message(s)" in moved.stdout
    [message] = service.get_queue_client(name).peek_messages()
    assert message.content == "aGVsbG8="
    assert list(service.get_queue_client(f"{name}-poison").peek_messages()) == []


def test_webhooks_register_and_audit_against_a_real_mlflow_server(mlflow_server, function_host,
                                                                 webhook_secret):
    env = {"MLFLOW_TRACKING_URI": mlflow_server.url, "GATEHOUSE_MLFLOW_WEBHOOK_SECRET":
           webhook_secret}
    registered = run_cli("webhooks", "register", "--name", f"cli-{uuid.uuid4().hex[:6]}",
                         "--url", f"{function_host.url}/api/registry/mlflow", env=env)
    assert registered.returncode == 0, registered.stderr
    assert json.loads(registered.stdout.splitlines()[-1])["test_ok"] is True
    listed = run_cli("webhooks", "list", env=env)
    assert f"{function_host.url}/api/registry/mlflow" in listed.stdout
    for hook in listed.stdout.splitlines():
        from mlflow import MlflowClient

        MlflowClient(mlflow_server.url).delete_webhook(json.loads(hook)["id"])
    audited = run_cli("audit", "--format", "json", env=env)
    assert audited.returncode == 0, audited.stderr
    assert "overall" in json.loads(audited.stdout)


def test_missing_tracking_uri_is_explained(monkeypatch):
    result = run_cli("audit", env={"MLFLOW_TRACKING_URI": ""})
    assert result.returncode != 0 and "no MLflow server" in result.stderr


@pytest.mark.parametrize("args", [["replay"], ["poison", "explode"], ["bogus"]])
def test_usage_errors_exit_2(args):
    assert run_cli(*args).returncode == 2


def test_rollouts_of_an_unknown_endpoint_is_explained(storage_env):
    result = run_cli("rollouts", f"nowhere-{uuid.uuid4().hex[:6]}",
                     env={"AzureWebJobsStorage": storage_env})
    assert result.returncode == 1 and "no rollout has ever run" in result.stderr


def test_gates_command_prints_the_report_and_changes_nothing(mlflow_server, moto_s3, tmp_path):
    import mlflow

    from shared.dev import demo, demo_models, devstack

    os.environ.update(devstack.mlflow_client_env(moto_s3.url))
    mlflow.set_tracking_uri(mlflow_server.url)
    name = f"cli-gates-{uuid.uuid4().hex[:6]}"
    version = demo_models.log_and_register(demo_models.train("good", seed=2), name, "cli")
    policy = demo.write_policy(tmp_path)
    result = run_cli("gates", name, version, "--policy", str(policy), env={
        "MLFLOW_TRACKING_URI": mlflow_server.url, **devstack.mlflow_client_env(moto_s3.url)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ece" in result.stdout.lower() and "passed" in result.stdout.lower()
    from mlflow import MlflowClient

    assert not any(k.startswith("gatehouse.") for k in
                   MlflowClient(mlflow_server.url).get_model_version(name, version).tags)


def run_in(workdir, *args, env=None) -> subprocess.CompletedProcess:
    """The CLI from another directory, with no Gatehouse settings in the environment."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("GATEHOUSE_", "AzureWebJobs", "MLFLOW_TRACKING"))}
    return subprocess.run([sys.executable, "-m", "shared.ops.cli", *args], cwd=workdir,
                          capture_output=True, text=True, timeout=120,
                          env={**clean, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})})


def test_status_without_storage_or_mlflow_says_what_is_missing(tmp_path):
    result = run_in(tmp_path, "status")
    assert result.returncode == 0, result.stderr
    assert "unknown (no storage: run `gatehouse up` in this directory" in result.stdout
    assert "unknown (no MLflow server" in result.stdout
    assert "no alerts" in result.stdout
    missing = run_in(tmp_path, "rollouts")
    assert missing.returncode != 0 and "AzureWebJobsStorage is not set and no `gatehouse up`" \
        in missing.stderr


def test_every_command_finds_the_storage_gatehouse_up_recorded(tmp_path, azurite):
    from shared.ops import localstate

    localstate.save({"azurite": {"pid": azurite.process.pid, "ports": azurite.ports,
                                 "connection_string": azurite.connection_string}}, tmp_path)
    rollouts = run_in(tmp_path, "rollouts")
    assert rollouts.returncode == 0, rollouts.stderr
    assert rollouts.stdout.startswith(("endpoint", "no rollouts yet"))
    poison = run_in(tmp_path, "poison", "list", f"none-{uuid.uuid4().hex[:6]}")
    assert poison.returncode == 0 and "no poison messages" in poison.stdout
    status = json.loads(run_in(tmp_path, "status", "--json").stdout)
    assert set(status["problems"]) == {"verdicts"}  # storage found; no MLflow named


def test_policy_check_prints_the_effective_policy_or_what_is_wrong(tmp_path):
    good = run_in(tmp_path, "policy", "check", str(PROJECT_ROOT / "policy.example.toml"))
    assert good.returncode == 0, good.stderr
    assert "valid; 2 model(s) with their own entry (churn, fraud-detector)" in good.stdout
    assert "[fraud-detector]" in good.stdout and "gates.ece.threshold = 0.03" in good.stdout
    effective = json.loads(run_in(tmp_path, "policy", "check", str(
        PROJECT_ROOT / "policy.example.toml"), "--json").stdout)
    assert effective["models"]["churn"]["gates"]["latency"]["enabled"] is False
    bad = tmp_path / "policy.toml"
    bad.write_text("[models.fraud.rollout]\nsteps = [5, 200]\n")
    refused = run_in(tmp_path, "policy", "check", str(bad))
    assert refused.returncode == 1 and "models.fraud.rollout.steps" in refused.stderr


def test_tables_use_relative_times_and_explain_empty_results():
    from shared.ops import render

    now = 1_000_000.0
    assert [render.ago(now - s, now) for s in (0, 42, 300, 7200, 172800)] == [
        "just now", "42 s ago", "5 min ago", "2 h ago", "2 d ago"]
    assert render.ago("1970-01-12T13:46:30+00:00", now) == "10 s ago"
    assert render.ago(None, now) == "-"
    rollout = {"endpoint": "fraud", "model_name": "fraud", "champion": "1", "active": None,
               "last": {"challenger": "2", "phase": "promoted", "routes": {"2": 100},
                        "updated_at": now - 90, "reason": "judge: advance"}}
    text = render.rollouts_table([rollout], now)
    assert "v2 100%" in text and "2 min ago" in text and str(now) not in text
    for empty in (render.rollouts_table, render.verdicts_table, render.alerts_table,
                  render.poison_table):
        assert empty([], now).startswith("no ")
