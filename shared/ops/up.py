"""`gatehouse up`: the app on this machine, connected to an MLflow server you already run.

Starts (or reuses) Azurite at the ports recorded in `.gatehouse/state.json`, takes the webhook
secret (flag, GATEHOUSE_MLFLOW_WEBHOOK_SECRET, the one recorded, or a new one), starts the
embedded serving endpoint when neither Databricks nor GATEHOUSE_SERVING_URL is configured, runs
the Function App on the local host, registers (or updates) the `gatehouse` webhook on the MLflow
server, records all of it in the state file and prints what runs where. It stays in the
foreground; Ctrl+C or SIGTERM stops the app and the serving endpoint. Azurite keeps running (and
keeps its data) for the next `gatehouse up`; `gatehouse down` stops it.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from shared.dev import devstack
from shared.foundation.storage import PROJECT_ROOT, Azurite, free_port
from shared.ops import localstate

WEBHOOK_NAME = "gatehouse"
WEBHOOK_EVENTS: list[Any] = [  # the client types them as literals
    "registered_model.created", "model_version.created", "model_version_tag.set",
    "model_version_tag.deleted", "model_version_alias.created", "model_version_alias.deleted"]
READY_LINE = "gatehouse is up"


def ensure_azurite(root: Path, state: dict) -> tuple[dict, bool]:
    """The recorded Azurite if it still answers, else a new one (detached, so the next `up`
    reuses it); returns its record and whether it was reused."""
    running = localstate.running_azurite(state)
    if running:
        return running, True
    workspace = root / localstate.STATE_DIR / "azurite"
    workspace.mkdir(parents=True, exist_ok=True)
    azurite = Azurite(str(workspace)).start()
    pid = azurite.process.pid if azurite.process is not None else None
    return {"pid": pid, "ports": azurite.ports, "workspace": str(workspace),
            "connection_string": azurite.connection_string}, False


def check_mlflow(tracking_uri: str) -> str | None:
    """Why the MLflow server cannot be used (None: it answers)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    try:
        reply = requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=60)
    except requests.RequestException as exc:
        return f"no MLflow server answers at {tracking_uri}: {exc.__class__.__name__}"
    if reply.status_code != 200:
        return f"{tracking_uri}/health answered {reply.status_code}"
    return None


def register_webhook(tracking_uri: str, url: str, secret: str) -> dict:
    """The `gatehouse` webhook pointing at `url` with `secret`: updated when one exists (the
    secret may have changed), created otherwise; then MLflow's test delivery."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    existing = next((hook for hook in client.list_webhooks()
                     if hook.name == WEBHOOK_NAME and hook.url == url), None)
    if existing is None:
        hook = client.create_webhook(name=WEBHOOK_NAME, url=url, events=WEBHOOK_EVENTS,
                                     secret=secret)
    else:
        hook = client.update_webhook(existing.webhook_id, events=WEBHOOK_EVENTS, secret=secret,
                                     status="ACTIVE")
    test = client.test_webhook(hook.webhook_id)
    return {"id": hook.webhook_id, "url": url, "test_ok": bool(test.success),
            "test_status": test.response_status}


def _secret(flag: str | None, state: dict) -> str:
    return (flag or os.environ.get("GATEHOUSE_MLFLOW_WEBHOOK_SECRET")
            or state.get("webhook_secret") or secrets.token_urlsafe(32))


def _policy_path(flag: str | None) -> str | None:
    from shared.policy import load_policy

    chosen = flag or os.environ.get("GATEHOUSE_POLICY_PATH")
    if not chosen:
        return None
    path = Path(chosen).resolve()
    load_policy(path)  # a bad file stops `up` here, with the PolicyError naming the key
    return str(path)


def _serving(root: Path, logs: Path, client_env: dict[str, str], port: int | None):
    """The embedded serving endpoint, unless Databricks or another serving URL is configured."""
    if os.environ.get("DATABRICKS_HOST") or os.environ.get("GATEHOUSE_SERVING_URL"):
        return None, os.environ.get("GATEHOUSE_SERVING_URL")
    payload_log = root / localstate.STATE_DIR / "payloads.sqlite"
    chosen = port or free_port()
    serving = devstack.ManagedProcess(
        "serving", [sys.executable, "-m", "shared.serving.embedded", "--port", str(chosen),
                    "--payload-log", str(payload_log)], client_env, chosen, logs)
    return serving.start(), None


def summary_lines(state: dict) -> list[str]:
    azurite = state["azurite"]
    ports = azurite["ports"]
    lines = [
        f"  app            {state['app']['url']}  (pid {state['app']['pid']}, log "
        f"{state['app']['log']})",
        f"  status page    {state['app']['url']}/api/status?code={state['function_key']}",
        f"  Azurite        blob {ports['blob']}, queue {ports['queue']}, table {ports['table']}"
        f"  (pid {azurite['pid']}, {'reused' if azurite.get('reused') else 'started'})",
        f"  MLflow         {state['tracking_uri']}  (webhook {state['webhook']['id']}: test "
        f"delivery {'ok' if state['webhook']['test_ok'] else 'FAILED'})",
        f"  serving        {state['serving']['url']}"
        + (f"  (embedded, pid {state['serving']['pid']})" if state['serving'].get('pid')
           else ""),
        f"  policy         {state.get('policy') or 'built-in defaults'}"
        " (re-read when the file changes)",
        f"  notifications  {state['outbox']}",
        f"  state          {localstate.state_path()}",
    ]
    return lines


def run(args) -> int:
    root = Path.cwd()
    state = localstate.load(root)
    tracking_uri = (args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                    or state.get("tracking_uri"))
    if not tracking_uri:
        print("gatehouse up needs an MLflow server: --tracking-uri http://host:5000 (or "
              "MLFLOW_TRACKING_URI)", file=sys.stderr)
        return 2
    problem = check_mlflow(tracking_uri)
    if problem:
        print(f"gatehouse up: {problem}", file=sys.stderr)
        return 2
    from shared.policy import PolicyError

    try:
        policy = _policy_path(args.policy)
    except PolicyError as exc:
        print(f"gatehouse up: {exc}", file=sys.stderr)
        return 2
    logs = root / localstate.STATE_DIR / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    azurite, reused = ensure_azurite(root, state)
    state = localstate.update(root, azurite=azurite, tracking_uri=tracking_uri)
    secret = _secret(args.webhook_secret, state)
    keys = {"function": state.get("function_key") or secrets.token_urlsafe(24),
            "master": state.get("master_key") or secrets.token_urlsafe(24)}
    state = localstate.update(root, webhook_secret=secret, function_key=keys["function"],
                              master_key=keys["master"])
    client_env = {**devstack.NO_TELEMETRY, "MLFLOW_TRACKING_URI": tracking_uri}
    outbox = os.environ.get("GATEHOUSE_OUTBOX_PATH") or str(
        root / localstate.STATE_DIR / "outbox.jsonl")
    stack: list[devstack.ManagedProcess] = []
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serving, serving_url = _serving(root, logs, client_env, args.serving_port)
        if serving is not None:
            stack.append(serving)
            serving_url = serving.url
        app_env = {
            **client_env, "AzureWebJobsStorage": azurite["connection_string"],
            "PYTHONUNBUFFERED": "1", "GATEHOUSE_MLFLOW_WEBHOOK_SECRET": secret,
            "GATEHOUSE_FUNCTION_KEY": keys["function"], "GATEHOUSE_MASTER_KEY": keys["master"],
            "GATEHOUSE_OUTBOX_PATH": outbox,
            "GATEHOUSE_RETRAINING_RUNS_DIR": str(root / localstate.STATE_DIR / "retraining"),
            **({"GATEHOUSE_POLICY_PATH": policy} if policy else {}),
            **({"GATEHOUSE_SERVING_URL": serving_url} if serving_url else {}),
            **({"GATEHOUSE_PAYLOAD_LOG": str(root / localstate.STATE_DIR / "payloads.sqlite")}
               if serving is not None else {}),
        }
        app = devstack.FunctionHost(
            [sys.executable, "-m", "shared.dev.local_host", "--port", str(args.port),
             "--app-root", str(PROJECT_ROOT)], app_env, args.port, logs)
        app.cwd = root  # relative paths in the policy are read from where `up` runs
        stack.append(app)
        devstack.host_ready(app.launch(), timeout=120)
        webhook = register_webhook(tracking_uri, f"{app.url}/api/registry/mlflow", secret)
        assert app.process is not None
        state = localstate.update(
            root, azurite={**azurite, "reused": reused}, policy=policy, outbox=outbox,
            webhook=webhook, started_at=time.time(), up_pid=os.getpid(),
            app={"url": app.url, "pid": app.process.pid, "log": str(app.log_path)},
            serving={"url": serving_url,
                     "pid": serving.process.pid if serving and serving.process else None})
        print(f"{READY_LINE}:", flush=True)
        print("\n".join(summary_lines(state)), flush=True)
        print("Register a model version on that MLflow server and watch `gatehouse status`. "
              "Ctrl+C stops the app and serving; Azurite stays for the next `gatehouse up` "
              "(`gatehouse down` stops it).", flush=True)
        while not stop.wait(0.5):
            if app.process is not None and app.process.poll() is not None:
                print(f"the app stopped (exit {app.process.returncode}); its log: "
                      f"{app.log_path}", file=sys.stderr)
                return 1
        return 0
    finally:
        for part in reversed(stack):
            part.stop()
        localstate.update(root, app=None, serving=None, up_pid=None)


def down(_args) -> int:
    """Stop the Azurite `gatehouse up` left running here (the app stops with `up` itself)."""
    state = localstate.load()
    azurite = localstate.running_azurite(state)
    if state.get("up_pid") and localstate.process_alive(state["up_pid"]):
        os.kill(int(state["up_pid"]), signal.SIGTERM)
        print(f"asked gatehouse up (pid {state['up_pid']}) to stop")
    if azurite is None:
        print("no Azurite recorded as running here")
        return 0
    os.kill(int(azurite["pid"]), signal.SIGTERM)
    localstate.update(azurite=None)
    print(f"stopped Azurite (pid {azurite['pid']}); its data stays in {azurite['workspace']}")
    return 0
