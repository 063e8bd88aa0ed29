"""The crash suite: for every failpoint in the code, kill the host there mid-flight, restart it,
let it drain, and check from the outside that each unit of work happened exactly once.

Real parts only: Azurite, moto S3, `mlflow server` (its signed webhooks drive the registry flow),
the embedded serving endpoint, Slack and PagerDuty peers speaking their wire formats, and the
project's local Functions host run as a subprocess that a failpoint ends with `os._exit(137)`.
The host's app root carries a 6 s functionTimeout, so a dead host's leases (queue visibility and
idempotency claims) run out quickly, as they would after a real function timeout.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from shared.dev import demo_models, devstack
from shared.dev.devstack import wait_for
from shared.foundation.paths import PROJECT_ROOT
from shared.foundation.storage import Azurite, free_port
from tests.crash import checks
from tests.crash.stack import CrashHost, RecordingProxy, wait_drained
from tests.notifications.peers import PagerDutyPeer, SlackPeer, make_self_signed_cert

pytestmark = pytest.mark.e2e

FAILPOINT_CALL = re.compile(r"""failpoint\(\s*["']([^"']+)["']\s*\)""")
GATE_EXPERIMENT = "gatehouse-crash-gates"
SLACK_CHANNEL = "#gatehouse-crash"
POLICY = """
[defaults.gates]
label_column = "label"
n_bootstrap = 50
experiment = "{experiment}"

# Crash-consistency, not gate math: the gates that need large holdouts are off.
[defaults.gates.ece]
enabled = false

[defaults.gates.reliability]
enabled = false

[defaults.gates.conformal]
enabled = false

[defaults.gates.evaluation]
path = "{holdout}"

[defaults.gates.latency]
enabled = false

[defaults.gates.comparison]
metrics = [{{name = "auc", tolerance = 0.05, relative = true}}]

[defaults.rollout]
steps = [5, 100]
min_bake_seconds = 0
min_requests_per_step = 20
warmup_seconds = 0
max_p99_latency_ratio = 50.0
max_error_rate = 0.5
replay_sample_size = 5
"""


def placed_failpoints() -> set[str]:
    """Every failpoint named in the app's source."""
    names: set[str] = set()
    for path in list((PROJECT_ROOT / "shared").rglob("*.py")) + list(
            (PROJECT_ROOT / "functions").rglob("*.py")):
        if path.name != "failpoints.py":
            names.update(FAILPOINT_CALL.findall(path.read_text()))
    return names


# ---- the stack (one per module) ----

@dataclass
class Stack:
    work: Path
    storage: str
    host: CrashHost
    mlflow: RecordingProxy
    serving: RecordingProxy
    serving_url: str
    slack: SlackPeer
    pagerduty: PagerDutyPeer
    mlflow_url: str
    secret: str
    client: object = None
    models: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, server_logs, moto_s3, mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    work = tmp_path_factory.mktemp("crash")
    azurite = Azurite(str(work / "azurite")).start()
    client_env = {**devstack.mlflow_client_env(moto_s3.url), "MLFLOW_TRACKING_URI": mlflow_server.url}
    serving_port = free_port()
    serving = devstack.ManagedProcess(
        "crash-serving", [sys.executable, "-m", "shared.serving.embedded", "--port",
                          str(serving_port), "--payload-log", str(work / "payloads.sqlite")],
        {**client_env, "PYTHONUNBUFFERED": "1"}, serving_port, server_logs).start(timeout=120)
    mlflow_proxy = RecordingProxy(mlflow_server.url).start()
    serving_proxy = RecordingProxy(serving.url).start()
    slack = SlackPeer("xoxb-" + secrets.token_hex(16), SLACK_CHANNEL).start()
    cert, key = make_self_signed_cert(work)
    routing_key = secrets.token_hex(16)
    pagerduty = PagerDutyPeer(routing_key, cert, key).start()
    holdout = work / "holdout.parquet"
    demo_models.generate(2000, seed=11).to_parquet(holdout)
    policy = work / "policy.toml"
    policy.write_text(POLICY.format(holdout=holdout, experiment=GATE_EXPERIMENT))
    secret = secrets.token_urlsafe(24)
    host = CrashHost(work, azurite.connection_string, {
        **client_env,
        "MLFLOW_TRACKING_URI": mlflow_proxy.url,
        "GATEHOUSE_MLFLOW_WEBHOOK_SECRET": secret,
        "GATEHOUSE_POLICY_PATH": str(policy),
        "GATEHOUSE_SERVING_URL": serving_proxy.url,
        "GATEHOUSE_PAYLOAD_LOG": str(work / "payloads.sqlite"),
        "GATEHOUSE_OUTBOX_PATH": str(work / "outbox.jsonl"),
        "SLACK_BOT_TOKEN": slack.token, "SLACK_CHANNEL": SLACK_CHANNEL,
        "SLACK_API_URL": slack.api_url,
        "PAGERDUTY_ROUTING_KEY": routing_key,
        "PAGERDUTY_EVENTS_URL": f"{pagerduty.url}/v2/enqueue",
        "PAGERDUTY_CA_BUNDLE": str(cert),
        "GATEHOUSE_NOTIFY_RETRY_SCALE": "0.01",
        "AzureWebJobs.ramp_traffic.Disabled": "true",
        "AzureWebJobs.monitor_endpoints.Disabled": "true",
        "AzureWebJobs.poll_registry.Disabled": "true",
    })
    mlflow.set_tracking_uri(mlflow_server.url)
    for name, value in client_env.items():
        import os
        os.environ[name] = value
    built = Stack(work, azurite.connection_string, host, mlflow_proxy, serving_proxy, serving.url,
                  slack, pagerduty, mlflow_server.url, secret, MlflowClient(mlflow_server.url))
    hook = built.client.create_webhook(
        name=f"gatehouse-crash-{uuid.uuid4().hex[:6]}", url=f"{host.url}/api/registry/mlflow",
        secret=secret, events=["model_version.created", "model_version_alias.created",
                               "model_version_tag.set"])
    yield built
    built.client.delete_webhook(hook.webhook_id)
    host.stop()
    for part in (mlflow_proxy, serving_proxy, slack, pagerduty):
        part.stop()
    serving.stop()
    azurite.stop()


# ---- the flows: prepare (no failpoint), act (the armed host does the work), done ----

def new_model(stack: Stack) -> str:
    """A model with v1 as @champion, served at 100% (set up directly, not through Gatehouse:
    the webhook subscribes to version and alias events, and v1's are let through unarmed)."""
    model = f"crash-{uuid.uuid4().hex[:8]}"
    stack.models.append(model)
    return model


def register_champion(stack: Stack, model: str) -> None:
    demo_models.log_and_register(demo_models.train("basic", seed=1), model, "v1")
    stack.client.set_registered_model_alias(model, "champion", "1")
    requests.put(f"{stack.serving_url}/gatehouse/endpoints/{model}/config",
                 json={"model_name": model, "routes": {"1": 100}}, timeout=120).raise_for_status()


def register_challenger(stack: Stack, model: str) -> None:
    demo_models.log_and_register(demo_models.train("good", seed=2), model, "v2")


def canary_started(stack: Stack, model: str) -> bool:
    state = requests.get(f"{stack.serving_url}/gatehouse/endpoints/{model}", timeout=30)
    return state.ok and state.json().get("routes") == {"1": 95, "2": 5}


@dataclass(frozen=True)
class Flow:
    name: str
    prepare: Callable[[Stack, str], None]
    act: Callable[[Stack, str], None]
    done: Callable[[Stack, str], bool]


REGISTER = Flow("a new version: webhook, router, gates, @challenger, canary, notifications",
                register_champion, register_challenger, canary_started)

# Which flow reaches each failpoint. A failpoint placed in the code without a flow fails
# test_every_failpoint_has_a_crash_scenario.
FLOWS: dict[str, Flow] = {}


def run_crash(stack: Stack, failpoint: str | None, flow: Flow) -> str:
    model = new_model(stack)
    stack.host.start()
    flow.prepare(stack, model)
    wait_drained(stack.storage, stack.host)
    stack.host.stop()
    stack.host.start(failpoint)
    flow.act(stack, model)
    if failpoint:
        wait_for(f"the host to reach {failpoint}", stack.host.crashed, timeout=120)
        stack.host.start()
    wait_for(f"{flow.name} to finish", lambda: flow.done(stack, model), timeout=120)
    wait_drained(stack.storage, stack.host)
    time.sleep(1.0)  # notifications in flight reach the peers
    stack.host.stop()
    return model


def exactly_once_problems(stack: Stack, model: str) -> list[str]:
    runs = checks.report_runs(stack.client, model, GATE_EXPERIMENT)
    return (checks.stranded(stack.storage)
            + checks.mlflow_writes(stack.mlflow, model)
            + checks.serving_writes(stack.serving, model)
            + checks.slack_posts(stack.slack, model)
            + checks.pagerduty_incidents(stack.pagerduty, model)
            + [f"{count} gate report runs for v{version}" for version, count in runs.items()
               if count != 1])


def test_every_failpoint_has_a_crash_scenario():
    placed = placed_failpoints()
    assert placed, "no failpoints in the code"
    assert placed - set(FLOWS) == set(), "failpoints without a crash scenario"
    assert set(FLOWS) - placed == set(), "crash scenarios for failpoints no longer in the code"


def test_without_a_crash_each_flow_happens_once(stack):
    for flow in {REGISTER}:
        model = run_crash(stack, None, flow)
        assert exactly_once_problems(stack, model) == []
        assert json.dumps(checks.report_runs(stack.client, model, GATE_EXPERIMENT)) == '{"2": 1}'


@pytest.mark.parametrize("failpoint", sorted(FLOWS))
def test_crash_at_failpoint_loses_and_doubles_nothing(stack, failpoint):
    model = run_crash(stack, failpoint, FLOWS[failpoint])
    assert exactly_once_problems(stack, model) == []
