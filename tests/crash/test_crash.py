"""The crash suite: for every failpoint in the code, kill the host there mid-flight, restart it,
let it drain, and check from the outside that each unit of work happened exactly once.

Real parts only: Azurite, moto S3, `mlflow server` (its signed webhooks drive the registry flow),
the embedded serving endpoint, Slack and PagerDuty peers speaking their wire formats, and the
project's local Functions host run as a subprocess that a failpoint ends with `os._exit(137)`.
The host's app root carries a 6 s functionTimeout, so a dead host's leases (queue visibility and
idempotency claims) run out quickly, as they would after a real function timeout.
"""

from __future__ import annotations

import os
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
from shared.foundation import queues
from shared.foundation.paths import PROJECT_ROOT
from shared.foundation.storage import Azurite, decode_queue_message, free_port
from tests.crash import checks
from tests.crash.stack import CrashHost, RecordingProxy, clear_queue, wait_drained
from tests.notifications.peers import (
    PagerDutyPeer,
    SlackPeer,
    TeamsPeer,
    make_self_signed_cert,
)

pytestmark = [pytest.mark.e2e, pytest.mark.crash]

FAILPOINT_CALL = re.compile(r"""failpoint\(\s*["']([^"']+)["']\s*\)""")
GATE_EXPERIMENT = "gatehouse-crash-gates"
SLACK_CHANNEL = "#gatehouse-crash"
SLACK_SIGNING_SECRET = secrets.token_hex(16)
LINK_SECRET = secrets.token_urlsafe(24)
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
steps = [50, 100]
min_bake_seconds = 0
min_requests_per_step = 10
warmup_seconds = 0
max_warmup_seconds = 0
max_p99_latency_ratio = 50.0
max_error_rate = 0.5
error_margin_absolute = 0.5
latency_tail_share = 1.0
replay_sample_size = 5
shadow_step = false

[defaults.monitoring.retraining]
entrypoint = ["{python}", "-c", "pass"]
cooldown_seconds = 86400

[defaults.notifications]
page_storm_window_seconds = 3600

[[defaults.notifications.routes]]
channels = ["slack", "teams", "outbox"]

[[defaults.notifications.routes]]
events = ["rollout.rollback_requested", "rollout.rollback_completed", "monitoring.alert"]
channels = ["pagerduty"]
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
    teams: TeamsPeer
    mlflow_url: str
    secret: str
    client: object = None
    pool: dict[str, list[str]] = field(default_factory=dict)
    accepted: set[str] = field(default_factory=set)
    unanswered: set[str] = field(default_factory=set)
    link_tokens: dict[str, str] = field(default_factory=dict)  # a retried click: the same link


@pytest.fixture(scope="module")
def stack(tmp_path_factory, server_logs, moto_s3, mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    work = tmp_path_factory.mktemp("crash")
    azurite = Azurite(str(work / "azurite")).start()
    client_env = {**devstack.mlflow_client_env(moto_s3.url),
                  "MLFLOW_TRACKING_URI": mlflow_server.url}
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
    teams = TeamsPeer(secrets.token_urlsafe(24)).start()
    holdout = work / "holdout.parquet"
    demo_models.generate(2000, seed=11).to_parquet(holdout)
    policy = work / "policy.toml"
    policy.write_text(POLICY.format(holdout=holdout, experiment=GATE_EXPERIMENT,
                                    python=sys.executable))
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
        "SLACK_API_URL": slack.api_url, "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
        "GATEHOUSE_ROLLBACK_LINK_SECRET": LINK_SECRET,
        "PAGERDUTY_ROUTING_KEY": routing_key,
        "PAGERDUTY_EVENTS_URL": f"{pagerduty.url}/v2/enqueue",
        "PAGERDUTY_CA_BUNDLE": str(cert),
        "TEAMS_WEBHOOK_URL": teams.webhook_url,
        "GATEHOUSE_RETRAINING_RUNS_DIR": str(work / "retraining"),
        "GATEHOUSE_NOTIFY_RETRY_SCALE": "0.01",
        "AzureWebJobs.ramp_traffic.Disabled": "true",
        "AzureWebJobs.monitor_endpoints.Disabled": "true",
        "AzureWebJobs.poll_registry.Disabled": "true",
    })
    mlflow.set_tracking_uri(mlflow_server.url)
    os.environ.update(client_env)
    built = Stack(work, azurite.connection_string, host, mlflow_proxy, serving_proxy, serving.url,
                  slack, pagerduty, teams, mlflow_server.url, secret,
                  MlflowClient(mlflow_server.url))
    yield built
    host.stop()
    for part in (mlflow_proxy, serving_proxy, slack, pagerduty, teams):
        part.stop()
    serving.stop()
    azurite.stop()


# ---- the flows: prepare (no failpoint), act (the armed host does the work), done ----

def serving_share(state: dict, version: str) -> int:
    return (state.get("routes") or {}).get(version, 0)


def register_champion(stack: Stack, model: str) -> None:
    demo_models.log_and_register(demo_models.train("basic", seed=1), model, "v1")
    stack.client.set_registered_model_alias(model, "champion", "1")
    requests.put(f"{stack.serving_url}/gatehouse/endpoints/{model}/config",
                 json={"model_name": model, "routes": {"1": 100}}, timeout=120).raise_for_status()


def register_challenger(stack: Stack, model: str) -> None:
    demo_models.log_and_register(demo_models.train("good", seed=2), model, "v2")


def canary_started(stack: Stack, model: str) -> bool:
    state = requests.get(f"{stack.serving_url}/gatehouse/endpoints/{model}", timeout=30)
    return state.ok and serving_share(state.json(), "2") == 50


@dataclass(frozen=True)
class Flow:
    """A unit of work: `canary` says whether it starts from a running canary of v2 (else from
    champion v1 alone); `act` starts it on the armed host; `done` is polled until it is over."""

    name: str
    canary: bool
    act: Callable[[Stack, str], None]
    done: Callable[[Stack, str], bool]
    also_armed: str = ""        # more failpoint actions for the armed host, e.g. a slow step
    poison_queue: str | None = None  # where the flow's message ends, on purpose
    timers: tuple[str, ...] = ()  # timer functions the host runs during the flow


def host_post(stack: Stack, route: str, body: dict | None = None) -> int | None:
    """A call to the host as a client makes it: a host dying under it is an error to retry."""
    try:
        return requests.post(f"{stack.host.url}/api/{route}", json=body or {}, timeout=60,
                             headers=stack.host.key_headers()).status_code
    except requests.RequestException:
        return None


def send_traffic(stack: Stack, model: str, count: int = 20) -> None:
    rows = demo_models.generate(count, seed=7)[demo_models.FEATURES].to_dict(orient="records")
    for index, row in enumerate(rows):
        requests.post(f"{stack.serving_url}/serving-endpoints/{model}/invocations",
                      json={"dataframe_records": [row]}, timeout=30,
                      headers={"X-Request-Id": f"{model}-{uuid.uuid4().hex[:8]}-{index}"})


def promoted(stack: Stack, model: str) -> bool:
    """Polled: traffic and a ramp tick each time (what the timer does), until v2 is champion."""
    if v2_champion_and_serving(stack, model):
        return True
    send_traffic(stack, model)
    host_post(stack, f"rollouts/{model}/ramp")
    return False


def v2_champion_and_serving(stack: Stack, model: str) -> bool:
    state = requests.get(f"{stack.serving_url}/gatehouse/endpoints/{model}", timeout=30).json()
    champion = stack.client.get_model_version_by_alias(model, "champion").version
    return serving_share(state, "2") == 100 and champion == "2"


def promoted_by_ticks(stack: Stack, model: str) -> bool:
    """Polled: traffic each time; the ramp timer's ticks (queue ramp-ticks) do the ramping."""
    if v2_champion_and_serving(stack, model):
        return True
    send_traffic(stack, model)
    return False


def post_alert(stack: Stack, key: str, alert: dict) -> bool:
    """Post a Gatehouse-format alert until the host accepted it (as an alerting system retries
    a dead receiver); True once accepted."""
    if key in stack.accepted:
        return True
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = host_post(stack, "alerts/gatehouse", {
        "schema": "gatehouse.monitor.alerts/v1",
        "alerts": [{"status": "firing", "severity": "critical", "starts_at": stamp, **alert}]})
    assert status is None or status in (200, 202, 503), status  # 200: taken, nothing to publish
    if status in (200, 202):
        stack.accepted.add(key)
    return status in (200, 202)


def latency_alert(model: str, status: str = "firing") -> dict:
    return {"alert_kind": "latency", "status": status, "model_name": model, "version": "2",
            "endpoint": model, "title": f"{model} v2 p99 latency too high",
            "figures": {"p99_ms": 900.0}}


def incident(stack: Stack, model: str, text: str) -> dict | None:
    with stack.pagerduty.lock:
        return next((i for i in stack.pagerduty.incidents
                     if model in i["summary"] and text in i["summary"]), None)


def rolled_back_and_resolved(stack: Stack, model: str) -> bool:
    """A critical latency alert on the canary: rolled back and paged; then the alert resolves
    and so does the incident."""
    if not post_alert(stack, f"{model}/firing", latency_alert(model)):
        return False
    state = requests.get(f"{stack.serving_url}/gatehouse/endpoints/{model}", timeout=30).json()
    # One page per model in a storm window: the alert's own, or the rollback's (naming the
    # alert) when the rollback was paged first and the alert's page was held, then dropped.
    paged = incident(stack, model, "latency") or incident(stack, model, "Rollback requested")
    if serving_share(state, "1") != 100 or paged is None:
        return False
    if not post_alert(stack, f"{model}/resolved", latency_alert(model, "resolved")):
        return False
    return paged["status"] == "resolved"


def register_big(stack: Stack, model: str) -> None:
    """v2 as a copy of v1 with a 200 KB description: a webhook body far over a queue message."""
    first = stack.client.get_model_version(model, "1")
    stack.client.create_model_version(model, first.source, run_id=first.run_id,
                                      model_id=first.source.removeprefix("models:/"),
                                      description="A long model card. " * 11_000)


def retraining_started(stack: Stack, model: str) -> bool:
    accepted = post_alert(stack, f"{model}/drift", {
        "alert_kind": "feature_drift", "severity": "warning", "model_name": model,
        "version": "1", "endpoint": model, "title": f"{model} feature drift",
        "figures": {"psi": 0.4}})
    with stack.slack.lock:
        return accepted and any(model in m["text"] and "etrain" in m["text"]
                                for m in stack.slack.messages.values())


def storm_then_still_firing(stack: Stack, model: str) -> bool:
    """Two critical alerts on one model: the first pages, the second is held by the storm; the
    first resolves, and the second, still firing, gets its own page."""
    errors = {"alert_kind": "error_rate", "model_name": model, "version": "1",
              "endpoint": model, "title": f"{model} v1 error rate too high",
              "figures": {"error_rate": 0.3}}
    latency = {**latency_alert(model), "version": "1", "title": f"{model} v1 p99 too high"}
    if not post_alert(stack, f"{model}/latency", latency):
        return False
    if incident(stack, model, "p99 too high") is None:
        return False
    if not post_alert(stack, f"{model}/errors", errors):
        return False
    time.sleep(2.0)  # the held page is decided before the resolve arrives
    if not post_alert(stack, f"{model}/latency-resolved", {**latency, "status": "resolved"}):
        return False
    return incident(stack, model, "storm") is not None


def resolution_taken(stack: Stack, model: str) -> bool:
    """A resolution for an alert Gatehouse never saw firing: remembered, so a late firing of
    the same episode is not taken for a new one."""
    return post_alert(stack, f"{model}/orphan", {**latency_alert(model, "resolved"),
                                                 "version": "1"})


def twin_copies(stack: Stack, model: str) -> None:
    """The same event on the router's queue twice, at once: one copy finds the other working."""
    from shared.events import Envelope, MonitoringAlert
    from shared.foundation.bus import Bus

    alert = MonitoringAlert(alert_kind="feature_drift", source="gatehouse", severity="info",
                            status="resolved", title=f"{model} twin check", model_name=model,
                            fingerprint=f"twin-{model}")
    envelope = Envelope.wrap(alert, source="/tests/crash")
    bus = Bus(stack.storage)
    bus.send(queues.REGISTRY_EVENTS, envelope)
    bus.send(queues.REGISTRY_EVENTS, envelope)


def twin_announced(stack: Stack, model: str) -> bool:
    with stack.slack.lock:
        return any(f"{model} twin check" in m["text"] for m in stack.slack.messages.values())


def until_accepted(stack: Stack, key: str, call: Callable[[], int | None]) -> bool:
    """A client's request, repeated while the host is down or answers 5xx; True once answered."""
    if key not in stack.accepted:
        status = call()
        if status is None or status >= 500:
            stack.unanswered.add(key)
            return False
        # A retry of a request whose answer the crash swallowed finds it done already: 409
        # (rolling back already), or 410 for a one-click link (spent once it was used).
        retried_after_crash = key in stack.unanswered and status in (409, 410)
        assert status < 300 or retried_after_crash, f"{key}: {status}"
        stack.accepted.add(key)
    return True


def back_on_champion(stack: Stack, model: str) -> bool:
    state = requests.get(f"{stack.serving_url}/gatehouse/endpoints/{model}", timeout=30).json()
    return serving_share(state, "1") == 100 and stack.client.get_model_version(
        model, "2").tags.get("gatehouse.rollout.phase") == "rolled_back"


def rolled_back_by_route(stack: Stack, model: str) -> bool:
    asked = until_accepted(stack, f"{model}/route", lambda: host_post(
        stack, f"rollouts/{model}/rollback", {"actor": "alice", "reason": "crash suite"}))
    return asked and back_on_champion(stack, model)


def rolled_back_by_link(stack: Stack, model: str) -> bool:
    from shared.rollout.links import make_token
    from shared.rollout.store import RolloutStore

    def click() -> int | None:
        token = stack.link_tokens.get(model)
        if token is None:
            record = RolloutStore.connect(stack.storage).load(model).record
            assert record is not None and record.active is not None
            token = stack.link_tokens[model] = make_token(LINK_SECRET, model, record.active.id,
                                                          now=time.time())
        try:
            return requests.post(f"{stack.host.url}/api/rollouts/rollback",
                                 params={"token": token}, timeout=60).status_code
        except requests.RequestException:
            return None

    return until_accepted(stack, f"{model}/link", click) and back_on_champion(stack, model)


def rolled_back_from_slack(stack: Stack, model: str) -> bool:
    from shared.channels import slack
    from shared.channels.base import RollbackTarget
    from tests.notifications.builders import block_actions_payload, signed_slack_request

    def click() -> int | None:
        button = {"action_id": slack.ROLLBACK_ACTION_ID, "text": {"type": "plain_text",
                                                                  "text": "Roll back"},
                  "value": slack.rollback_value(RollbackTarget(model, "2", model))}
        body, headers = signed_slack_request(SLACK_SIGNING_SECRET, block_actions_payload(button))
        try:
            return requests.post(f"{stack.host.url}/api/slack/actions", data=body,
                                 headers=headers, timeout=60).status_code
        except requests.RequestException:
            return None

    return until_accepted(stack, f"{model}/slack", click) and back_on_champion(stack, model)


def labels_stored(stack: Stack, model: str) -> bool:
    from shared.monitoring.labels import LabelStore

    labels = {f"{model}-request-{n}": n % 2 for n in range(20)}
    stored = until_accepted(stack, f"{model}/labels", lambda: host_post(
        stack, f"monitor/labels/{model}", {"labels": labels}))
    return stored and len(LabelStore.connect(stack.storage).get(model, labels)) == len(labels)


def wrong_message(stack: Stack, model: str) -> None:
    """An event start-canary cannot take: it fails each time and must end on poison, with why."""
    from shared.events import Envelope, ModelVersionCreated
    from shared.foundation.bus import Bus

    Bus(stack.storage).send(queues.START_CANARY, Envelope.wrap(
        ModelVersionCreated(model_name=model, version="1"), source="/tests/crash"))


def poisoned_with_reason(stack: Stack, model: str) -> bool:
    from shared.foundation.failures import FailureLog
    from shared.foundation.storage import queue_service

    poison = queue_service(stack.storage).get_queue_client(f"{queues.START_CANARY}-poison")
    try:
        messages = poison.peek_messages(max_messages=32)
    except Exception:
        return False
    log = FailureLog.connect(stack.storage)
    ours = []
    for message in messages:
        decoded = decode_queue_message(message.content, "base64")
        body = decoded if isinstance(decoded, bytes) else decoded.encode()
        if model.encode() in body:
            ours.append(log.find(queues.START_CANARY, body) or {})
    return len(ours) == 1 and bool(ours[0].get("last_error")) and (
        ours[0].get("handler") == "start_canary")


def set_alias(stack: Stack, model: str) -> None:
    stack.client.set_registered_model_alias(model, "crash-test", "1")


def alias_announced(stack: Stack, model: str) -> bool:
    with stack.slack.lock:
        return any(model in m["text"] and "@crash-test" in m["text"]
                   for m in stack.slack.messages.values())


def nothing(stack: Stack, model: str) -> None:
    pass


ALIAS = Flow("an alias set in MLflow: webhook, router, a Slack notification", False, set_alias,
             alias_announced)
REGISTER = Flow("a new version: webhook, router, gates, @challenger, canary, notifications",
                False, register_challenger, canary_started)
PROMOTE = Flow("a canary ramped on live traffic and promoted", True, nothing, promoted)
ROLLBACK = Flow("a critical alert on the canary: rollback, a page, resolved", True, nothing,
                rolled_back_and_resolved)
BIG = Flow("a 200 KB registration: claim check, gates, canary", False, register_big,
           canary_started)
RETRAIN = Flow("a feature drift alert: retraining started and announced", False, nothing,
               retraining_started)
STORM = Flow("an alert storm: one page, the held alert paged when the storm ends", False, nothing,
             storm_then_still_firing)
ORPHAN_RESOLUTION = Flow("a resolution of an alert never seen firing", False, nothing,
                         resolution_taken)
TWIN = Flow("two copies of one event at once: the later one waits for the first", False,
            twin_copies, twin_announced, also_armed="handling.work_done=sleep(4)")
POISON = Flow("a message its handler cannot take: poison, with the reason", False,
              wrong_message, poisoned_with_reason, poison_queue=queues.START_CANARY)
MANUAL = Flow("a rollback asked on the route", True, nothing, rolled_back_by_route)
LINK = Flow("a rollback by a signed one-click link", True, nothing, rolled_back_by_link)
SLACK_BUTTON = Flow("a rollback by Slack's Roll back button", True, nothing,
                    rolled_back_from_slack)
LABELS = Flow("late labels posted for an endpoint", False, nothing, labels_stored)
TICKED = Flow("a canary ramped and promoted by the ramp timer's ticks", True, nothing,
              promoted_by_ticks, timers=("ramp_traffic",))
BASELINE = (ALIAS, REGISTER, PROMOTE, ROLLBACK, BIG, RETRAIN, STORM, ORPHAN_RESOLUTION, TWIN,
            POISON, MANUAL, LINK, SLACK_BUTTON, LABELS, TICKED)

# Which flow reaches each failpoint. A failpoint placed in the code without a flow fails
# test_every_failpoint_has_a_crash_scenario.
FLOWS: dict[str, Flow] = {
    **dict.fromkeys(["receiver.enqueued", "router.notification_requested", "handling.work_done",
                     "handling.completed", "notify.delivered", "notify.sent_slack"], ALIAS),
    **dict.fromkeys(["router.forwarded", "gates.report_run_created", "gates.report_logged",
                     "gates.tags_written", "gates.alias_set", "gates.reference_saved",
                     "gates.published"], REGISTER),
    **dict.fromkeys(["rollout.saved", "rollout.action_done", "rollout.action_cleared"], PROMOTE),
    **dict.fromkeys(["monitoring.rollback_requested", "pagerduty.triggered",
                     "notify.sent_pagerduty", "pagerduty.resolved"], ROLLBACK),
    **dict.fromkeys(["notify.sent_teams", "notify.sent_outbox"], ALIAS),
    "bus.claim_uploaded": BIG,
    **dict.fromkeys(["monitoring.retraining_started", "monitoring.retraining_announced",
                     "monitoring.retraining_confirmed"], RETRAIN),
    "pagerduty.storm_paged": STORM,
    "handling.twin_rescheduled": TWIN,
    "handling.failure_recorded": POISON,
    **dict.fromkeys(["alerts.batch_taken", "alerts.claim_completed", "alerts.published",
                     "alerts.state_recorded"], STORM),
    "alerts.resolution_recorded": ORPHAN_RESOLUTION,
    "rollout.http_ramp_done": PROMOTE,
    "rollout.http_rollback_requested": MANUAL,
    **dict.fromkeys(["rollout.link_rollback_requested", "rollout.link_spent"], LINK),
    "slack.rollback_published": SLACK_BUTTON,
    "monitor.labels_stored": LABELS,
    **dict.fromkeys(["fanout.tick_marked", "fanout.tick_enqueued"], TICKED),
}


def flows_selected(session) -> list[Flow]:
    """The flows of the tests this session runs: each needs a model of its own."""
    wanted: list[Flow] = []
    for item in session.items:
        if item.name.startswith("test_without_a_crash"):
            wanted += BASELINE
        elif item.name.startswith("test_crash_at_failpoint"):
            wanted.append(FLOWS[item.callspec.params["failpoint"]])
    return wanted


@pytest.fixture(scope="module")
def ready(stack, request):
    """Models for every crash run, made up front: champion v1 for each (before the webhook
    exists, so Gatehouse does not see them), then, for the flows that start from a canary, v2
    registered and its canary started by an unarmed host."""
    models: dict[str, list[str]] = {flow.name: [] for flow in BASELINE}
    for flow in flows_selected(request.session):
        model = f"crash-{uuid.uuid4().hex[:8]}"
        register_champion(stack, model)
        models[flow.name].append(model)
    hook = stack.client.create_webhook(
        name=f"gatehouse-crash-{uuid.uuid4().hex[:6]}",
        url=f"{stack.host.url}/api/registry/mlflow", secret=stack.secret,
        events=["model_version.created", "model_version_alias.created", "model_version_tag.set"])
    canaries = [m for flow in BASELINE if flow.canary for m in models[flow.name]]
    if canaries:
        stack.host.start()
        for model in canaries:
            register_challenger(stack, model)
        for model in canaries:
            wait_for(f"the canary of {model}", lambda m=model: canary_started(stack, m), 180)
        wait_drained(stack.storage, stack.host)
        stack.host.stop()
    stack.host.all_logs()
    stack.pool = models
    yield stack
    stack.client.delete_webhook(hook.webhook_id)


def run_crash(stack: Stack, failpoint: str | None, flow: Flow) -> str:
    """Start the armed host, start the flow, restart the host once the failpoint ended it, and
    wait until the flow is over and every queue has drained."""
    model = stack.pool[flow.name].pop()
    try:
        drive(stack, model, failpoint, flow)
    finally:
        stack.host.stop()
        if flow.poison_queue:
            clear_queue(stack.storage, f"{flow.poison_queue}-poison")
    return model


FLOW_DEADLINE_SECONDS = 300  # generous: two cores may be shared with other work


def drive(stack: Stack, model: str, failpoint: str | None, flow: Flow) -> None:
    stack.host.start(failpoint, flow.also_armed, flow.timers)
    flow.act(stack, model)
    deadline = time.monotonic() + FLOW_DEADLINE_SECONDS
    crashed = False
    while True:
        finished = flow.done(stack, model)  # polling may drive the work, as a client or timer
        if failpoint and not crashed and stack.host.crashed():
            crashed = True
            stack.host.start(None, flow.also_armed, flow.timers)
        elif finished and (crashed or not failpoint):
            break
        assert time.monotonic() < deadline, (f"{flow.name}: unfinished (crashed: {crashed}); "
                                             f"the host's last words on {model}:\n"
                                             + stack.host.lines_about(model)[-4000:])
        time.sleep(0.5)
    wait_drained(stack.storage, stack.host, expected_poison=flow.poison_queue)
    time.sleep(1.0)  # notifications in flight reach the peers


def exactly_once_problems(stack: Stack, model: str, flow: Flow) -> list[str]:
    runs = checks.report_runs(stack.client, model, GATE_EXPERIMENT)
    problems = (checks.stranded(stack.storage, flow.poison_queue)
                + checks.teams_cards(stack.teams, model)
                + checks.outbox_lines(stack.work / "outbox.jsonl", model)
                + checks.retraining_runs(stack.work / "retraining", model)
                + checks.mlflow_writes(stack.mlflow, model)
                + checks.serving_writes(stack.serving, model)
                + checks.slack_posts(stack.slack, model)
                + checks.pagerduty_incidents(stack.pagerduty, model)
                + [f"{count} gate report runs for v{version}" for version, count in runs.items()
                   if count != 1])
    return problems


def test_every_failpoint_has_a_crash_scenario():
    placed = placed_failpoints()
    assert placed, "no failpoints in the code"
    assert placed - set(FLOWS) == set(), "failpoints without a crash scenario"
    assert set(FLOWS) - placed == set(), "crash scenarios for failpoints no longer in the code"


@pytest.mark.timeout(900)
def test_without_a_crash_each_flow_happens_once(ready):
    stack = ready
    for flow in BASELINE:
        model = run_crash(stack, None, flow)
        assert exactly_once_problems(stack, model, flow) == [], flow.name
        gated = {"2": 1} if flow.canary or flow in (REGISTER, BIG) else {}
        assert checks.report_runs(stack.client, model, GATE_EXPERIMENT) == gated, flow.name
        print("REACHED", flow.name, sorted(set(re.findall(r"failpoint (\S+): trace",
                                                          stack.host.all_logs()))))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("failpoint", sorted(FLOWS))
def test_crash_at_failpoint_loses_and_doubles_nothing(ready, failpoint):
    model = run_crash(ready, failpoint, FLOWS[failpoint])
    assert exactly_once_problems(ready, model, FLOWS[failpoint]) == []
