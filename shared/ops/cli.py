"""gatehouse: the operator's command line (`gatehouse --help`).

Storage comes from AzureWebJobsStorage (as for the app), else from the Azurite that `gatehouse up`
recorded in ./.gatehouse/state.json; MLflow from --tracking-uri, MLFLOW_TRACKING_URI, or that
state file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

EPILOG = """examples:
  gatehouse up --tracking-uri http://127.0.0.1:5000 --policy policy.toml
                                        the app on this machine, wired to your MLflow server
  gatehouse status                      rollouts, recent verdicts, alerts, poison (--json too)
  gatehouse policy check policy.toml    validate a policy, print each model's effective policy
  python -m shared.ops.cli replay event.json --dry-run       what would happen, no side effects
  python -m shared.ops.cli replay webhook.json --format mlflow
  python -m shared.ops.cli poison list                       messages that failed every retry,
                                                             with handler, attempts, last error
  python -m shared.ops.cli poison redrive run-gates          put them back on their queue
  python -m shared.ops.cli webhooks register --url https://<app>/api/registry/mlflow
  python -m shared.ops.cli audit --format md --chart audit.png
  python -m shared.ops.cli poll --registry-uri databricks-uc --models main.fraud.model
  python -m shared.ops.cli rollouts fraud                    one endpoint's rollout and its history
  python -m shared.ops.cli gates fraud 7                     run the gate suite, print the report
"""


def _storage() -> str:
    from shared.foundation import runtime
    from shared.ops import localstate

    app = runtime.settings()
    if app.storage_connection or app.storage_account_name:
        return runtime.storage_connection()
    recorded = localstate.storage_connection()
    if recorded:
        return recorded
    raise SystemExit("no storage to read: AzureWebJobsStorage is not set and no `gatehouse up` "
                     f"runs from this directory ({localstate.state_path()} names no running "
                     "Azurite); start `gatehouse up` here, or set AzureWebJobsStorage")


def _tracking_uri(flag: str | None = None) -> str | None:
    from shared.foundation import runtime
    from shared.ops import localstate

    return (flag or runtime.settings().mlflow_tracking_uri
            or localstate.load().get("tracking_uri"))


def _read_input(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def load_event(body: bytes, source_format: str):
    """An Envelope from a stored envelope, or from a raw MLflow / Databricks webhook body."""
    from shared.events import Envelope
    from shared.intake import inbound
    from shared.intake.receiver import EVENT_SOURCES

    if source_format == "envelope":
        return Envelope.from_json(body)
    parsed = (inbound.parse_mlflow(body) if source_format == "mlflow"
              else inbound.parse_databricks(body))
    if isinstance(parsed, inbound.Ignored):
        raise SystemExit(f"nothing to replay: {parsed.reason}")
    return Envelope.wrap(parsed.payload, source=EVENT_SOURCES[source_format],
                         time=parsed.occurred_at)


def plan(envelope) -> dict:
    """The decisions live processing makes for this event, computed without side effects."""
    from shared import routing
    from shared.channels import messages as notifications

    notification = notifications.notification_for(envelope)
    return {
        "event": {"id": envelope.id, "type": envelope.type, "subject": envelope.subject},
        "handler_queues": list(routing.handler_queues(envelope.data.kind)),
        "notification": notification.model_dump(mode="json", exclude_none=True)
        if notification else None,
    }


def cmd_replay(args) -> int:
    from shared.foundation.bus import Bus
    from shared.foundation.queues import GATEHOUSE_EVENTS, REGISTRY_EVENTS

    try:
        envelope = load_event(_read_input(args.file), args.format)
    except (ValueError, OSError) as exc:
        print(f"cannot replay {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.new_id:
        envelope = envelope.model_copy(update={"id": f"replay-{os.urandom(6).hex()}"})
    decisions = plan(envelope)
    if args.dry_run:
        print(json.dumps({"dry_run": True, **decisions}, indent=2))
        return 0
    from shared.events import REGISTRY_EVENTS as REGISTRY_KINDS

    queue = REGISTRY_EVENTS if type(envelope.data) in REGISTRY_KINDS else GATEHOUSE_EVENTS
    Bus(_storage()).send(queue, envelope)
    print(json.dumps({"enqueued_on": queue, **decisions}, indent=2))
    return 0


def cmd_poison(args) -> int:
    from shared.foundation.storage import queue_service
    from shared.ops import render
    from shared.ops.poison import poison_messages, poison_queues

    if args.action == "list":
        entries = list(poison_messages(_storage(), args.queue))
        if args.json:
            for entry in entries:
                print(json.dumps(entry))
        else:
            print(render.poison_table(entries, time.time()))
        return 0
    service = queue_service(_storage())
    moved = 0
    for name in poison_queues(service, args.queue):
        poison = service.get_queue_client(name)
        target = service.get_queue_client(name.removesuffix("-poison"))
        while True:
            batch = list(poison.receive_messages(max_messages=32, visibility_timeout=60))
            if not batch:
                break
            for message in batch:
                target.send_message(message.content)
                poison.delete_message(message)
                moved += 1
    print(f"moved {moved} message(s) back to their queues")
    return 0


def _client(args):
    from mlflow import MlflowClient

    uri = _tracking_uri(args.tracking_uri)
    if not uri:
        raise SystemExit("no MLflow server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return MlflowClient(tracking_uri=uri)


def cmd_webhooks(args) -> int:
    client = _client(args)
    if args.action == "list":
        for hook in client.list_webhooks():
            print(json.dumps({"id": hook.webhook_id, "name": hook.name, "url": hook.url,
                              "events": [str(e) for e in hook.events],
                              "status": str(hook.status)}))
        return 0
    if not args.url:
        raise SystemExit("webhooks register needs --url (the /api/registry/mlflow address)")
    secret = os.environ.get(args.secret_env)
    if not secret:
        raise SystemExit(f"set {args.secret_env} to the webhook secret first")
    hook = client.create_webhook(name=args.name, url=args.url, events=args.events, secret=secret)
    result = client.test_webhook(hook.webhook_id)
    print(json.dumps({"id": hook.webhook_id, "test_delivery_status": result.response_status,
                      "test_ok": result.success}))
    return 0 if result.success else 1


def cmd_audit(args) -> int:
    from shared.ops import audit

    summary = audit.summarise(audit.collect(_client(args), args.models or None))
    print(audit.to_json(summary) if args.format == "json" else audit.to_markdown(summary))
    if args.chart:
        audit.write_chart(summary, args.chart)
    return 0


def cmd_poll(args) -> int:
    from mlflow import MlflowClient

    from shared.foundation.bus import Bus
    from shared.foundation.queues import REGISTRY_EVENTS
    from shared.foundation.state import StateTable
    from shared.intake import poller

    client = MlflowClient(tracking_uri=args.tracking_uri or args.registry_uri,
                          registry_uri=args.registry_uri)
    bus = Bus(_storage())
    store = poller.SnapshotStore(StateTable(_storage(), poller.TABLE), args.registry_uri)
    emitted = poller.poll_once(client, store, lambda e: bus.send(REGISTRY_EVENTS, e),
                               poller.registry_kind(args.registry_uri), args.models or None)
    for envelope in emitted:
        print(json.dumps({"id": envelope.id, "type": envelope.type, "subject": envelope.subject}))
    return 0


def cmd_rollouts(args) -> int:
    from shared.ops import render
    from shared.ops.status import rollouts

    found = rollouts(_storage())
    if args.endpoint:
        found = [r for r in found if r["endpoint"] == args.endpoint]
        if not found:
            print(f"no rollout has ever run on endpoint {args.endpoint!r}", file=sys.stderr)
            return 1
    if args.json:
        for rollout in found:
            if not args.endpoint:
                rollout.pop("history")
            print(json.dumps(rollout, indent=2 if args.endpoint else None, default=str))
        return 0
    print(render.rollouts_table(found, time.time()))
    if args.endpoint:
        print("\n" + render.history_table(found[0]["history"], time.time()))
    return 0


def cmd_status(args) -> int:
    from shared.foundation import runtime
    from shared.ops import localstate, render
    from shared.ops.status import gather

    state = localstate.load()
    try:
        storage: str | None = _storage()
    except SystemExit:  # the status says so in its sections
        storage = None
    outbox = (os.environ.get("GATEHOUSE_OUTBOX_PATH") or state.get("outbox")
              or runtime.settings().outbox_path)
    status = gather(storage, _tracking_uri(args.tracking_uri), Path(outbox))
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(render.status_text(status, time.time()))
    return 0


def cmd_policy(args) -> int:
    from shared.policy import PolicyError, load_policy

    try:
        policy = load_policy(args.file)
    except PolicyError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 1
    effective = {"defaults": policy.defaults.model_dump(mode="json"),
                 "models": {name: policy.for_model(name).model_dump(mode="json")
                            for name in policy.models}}
    if args.json:
        print(json.dumps(effective, indent=2))
        return 0
    print(f"{args.file}: valid; {len(policy.models)} model(s) with their own entry"
          + (f" ({', '.join(policy.models)})" if policy.models else "")
          + "; any other model gets the defaults.")
    for name, document in [("defaults", effective["defaults"]), *effective["models"].items()]:
        print(f"\n[{name}]")
        for line in _flatten(document):
            print(f"  {line}")
    return 0


def _flatten(document: dict, prefix: str = "") -> list[str]:
    lines = []
    for key, value in document.items():
        if isinstance(value, dict) and value:
            lines += _flatten(value, f"{prefix}{key}.")
        else:
            lines.append(f"{prefix}{key} = {json.dumps(value)}")
    return lines


def cmd_up(args) -> int:
    from shared.ops import up

    return up.run(args)


def cmd_down(args) -> int:
    from shared.ops import up

    return up.down(args)


def cmd_gates(args) -> int:
    """The suite on one version, printed; nothing is tagged, logged or published."""
    from shared.gates import report as rendering
    from shared.gates.service import GateService
    from shared.policy import load_policy
    from shared.registry.client import Registry

    policy = load_policy(args.policy)
    service = GateService(Registry(tracking_uri=args.tracking_uri), bus=None,  # publishes nothing
                          policy_for=lambda model: policy.for_model(model).gates)
    evaluation = service.evaluate(args.model, args.version)
    if evaluation is None:
        print(f"no version {args.version} of model {args.model!r} in the registry",
              file=sys.stderr)
        return 1
    report = evaluation.report
    context = {"requested_by": "cli", "evaluation_data": evaluation.policy.evaluation.path}
    print(rendering.report_json(report, evaluation.policy, context) if args.format == "json"
          else rendering.report_markdown(report, context))
    return 0 if report.verdict == "passed" else 1


def _replay_command(commands) -> None:
    replay = commands.add_parser("replay", help="send a stored or hand-written event through "
                                 "the handlers again")
    replay.add_argument("file", help="a JSON file, or - for standard input")
    replay.add_argument("--format", choices=("envelope", "mlflow", "databricks"),
                        default="envelope", help="what the file holds (default: a Gatehouse "
                        "CloudEvents envelope)")
    replay.add_argument("--dry-run", action="store_true",
                        help="print the decisions (handler queues, notification) and change "
                             "nothing")
    replay.add_argument("--new-id", action="store_true",
                        help="give the event a new id so handlers that saw it act again")
    replay.set_defaults(run=cmd_replay)


def _poison_command(commands) -> None:
    poison = commands.add_parser("poison", help="messages that failed every retry: list them "
                                 "(with handler, attempts and last error) or redrive them")
    poison.add_argument("action", choices=("list", "redrive"))
    poison.add_argument("queue", nargs="?", help="one queue (e.g. run-gates); default all")
    poison.add_argument("--json", action="store_true", help="one JSON object per message")
    poison.set_defaults(run=cmd_poison)


def _webhooks_command(commands) -> None:
    webhooks = commands.add_parser("webhooks", help="register Gatehouse on an MLflow server")
    webhooks.add_argument("action", choices=("register", "list"))
    webhooks.add_argument("--tracking-uri")
    webhooks.add_argument("--url", help="Gatehouse's /api/registry/mlflow address")
    webhooks.add_argument("--name", default="gatehouse")
    webhooks.add_argument("--secret-env", default="GATEHOUSE_MLFLOW_WEBHOOK_SECRET",
                          help="environment variable holding the shared secret")
    webhooks.add_argument("--events", nargs="+", default=[
        "registered_model.created", "model_version.created", "model_version_tag.set",
        "model_version_tag.deleted", "model_version_alias.created",
        "model_version_alias.deleted"])
    webhooks.set_defaults(run=cmd_webhooks)


def _audit_command(commands) -> None:
    audit = commands.add_parser("audit", help="MLOps maturity audit of a registry")
    audit.add_argument("--tracking-uri")
    audit.add_argument("--models", nargs="*")
    audit.add_argument("--format", choices=("md", "json"), default="md")
    audit.add_argument("--chart", help="also write a PNG chart here")
    audit.set_defaults(run=cmd_audit)


def _poll_command(commands) -> None:
    poll = commands.add_parser("poll", help="poll a registry once (Unity Catalog, or any)")
    poll.add_argument("--registry-uri", required=True)
    poll.add_argument("--tracking-uri")
    poll.add_argument("--models", nargs="*")
    poll.set_defaults(run=cmd_poll)


def _rollouts_command(commands) -> None:
    rollouts = commands.add_parser("rollouts", help="rollouts per endpoint, or one with history")
    rollouts.add_argument("endpoint", nargs="?")
    rollouts.add_argument("--json", action="store_true", help="JSON instead of tables")
    rollouts.set_defaults(run=cmd_rollouts)


def _gates_command(commands) -> None:
    gates = commands.add_parser("gates", help="run the gate suite on a version and print the "
                                "report (exit 1 unless it passes); changes nothing")
    gates.add_argument("model")
    gates.add_argument("version")
    gates.add_argument("--tracking-uri")
    gates.add_argument("--policy", help="policy file (default: GATEHOUSE_POLICY_PATH or "
                       "./policy.toml)")
    gates.add_argument("--format", choices=("md", "json"), default="md")
    gates.set_defaults(run=cmd_gates)


def _status_command(commands) -> None:
    status = commands.add_parser("status", help="rollouts, recent gate verdicts, alerts and "
                                 "pages, poison messages")
    status.add_argument("--tracking-uri")
    status.add_argument("--json", action="store_true", help="JSON instead of tables")
    status.set_defaults(run=cmd_status)


def _policy_command(commands) -> None:
    policy = commands.add_parser("policy", help="check a policy file")
    policy.add_argument("action", choices=("check",))
    policy.add_argument("file")
    policy.add_argument("--json", action="store_true",
                        help="the effective policy per model as JSON")
    policy.set_defaults(run=cmd_policy)


def _up_command(commands) -> None:
    up = commands.add_parser("up", help="run the app here against your MLflow server (Azurite, "
                             "embedded serving, the webhook); Ctrl+C stops it")
    up.add_argument("--tracking-uri", help="your MLflow server (default: MLFLOW_TRACKING_URI)")
    up.add_argument("--policy", help="policy file (default: GATEHOUSE_POLICY_PATH, else the "
                    "built-in defaults)")
    up.add_argument("--port", type=int, default=7071, help="the app's HTTP port")
    up.add_argument("--serving-port", type=int, default=None,
                    help="the embedded serving endpoint's port (default: a free one)")
    up.add_argument("--webhook-secret", help="the MLflow webhook's secret (default: "
                    "GATEHOUSE_MLFLOW_WEBHOOK_SECRET, the recorded one, or a new one)")
    up.set_defaults(run=cmd_up)
    down = commands.add_parser("down", help="stop what `gatehouse up` left running here")
    down.set_defaults(run=cmd_down)


COMMANDS = (_up_command, _status_command, _policy_command, _replay_command, _poison_command,
            _webhooks_command, _audit_command, _poll_command,
            _rollouts_command, _gates_command)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="gatehouse", description="Run and operate Gatehouse: run it against your MLflow, "
        "see what it does, check a policy, replay events, look at what failed, audit a "
        "registry.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
