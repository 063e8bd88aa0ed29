"""`make demo`: the whole Gatehouse story on the embedded stack, narrated.

Starts Azurite, moto's S3, a real `mlflow server`, the embedded serving endpoint and the Function
App on the local host, registers a signed MLflow webhook, then:
  1. version 1 of a fraud classifier: gates, then it serves 100% as the first @champion;
  2. version 2, better and calibrated: gates pass, shadow step (mirrored traffic), 5% canary,
     live traffic, judged ramp, promotion;
  3. version 3, over-confident: refused by the calibration gate, with the reliability diagram;
  4. version 4 passes the gates but fails its shadow step (injected errors): automatic rollback
     before any caller saw its answers, a page;
  5. traffic drifts: the monitor raises a drift alert, retraining registers version 5, which goes
     through the gates by itself.
Ends with a summary. KEEP=1 leaves the stack running; GATEHOUSE_DEMO_SHORT=1 (CI) stops after
step 3.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import requests

from shared.channels.outbox import OutboxChannel
from shared.dev import demo_models, devstack
from shared.dev.devstack import wait_for
from shared.foundation.storage import Azurite, free_port

MODEL = "fraud"
ENDPOINT = "fraud"
TRAFFIC_CLIENTS = 4
MONITOR_WINDOW_SECONDS = 10
POLICY = """
[defaults.gates]
label_column = "label"
n_bootstrap = 100

[defaults.gates.ece]
n_bins = 10
binning = "equal_mass"

[defaults.gates.evaluation]
path = "{holdout}"

[defaults.gates.latency]
enabled = false

[defaults.gates.comparison]
metrics = [{{name = "auc", tolerance = 0.02, relative = true}},
           {{name = "log_loss", tolerance = 0.03, relative = true}},
           {{name = "brier", tolerance = 0.03, relative = true}}]

[defaults.rollout]
steps = [5, 50, 100]
min_bake_seconds = 2
min_requests_per_step = 80
warmup_seconds = 0
max_warmup_seconds = 0
max_p99_latency_ratio = 4.0
max_error_rate = 0.02
error_margin_absolute = 0.05     # the demo promotes on a few hundred requests
latency_tail_share = 0.5
replay_sample_size = 20
min_shadow_requests = 80        # the shadow step: mirrored requests before the first 5%

[defaults.monitoring]
window_seconds = {window_seconds}
min_rows = 100
min_labelled_rows = 1000000
min_requests = 20

[defaults.monitoring.retraining]
entrypoint = "python -m shared.dev.demo_models --retrain --model {{model}}"
cooldown_seconds = 3600
"""


SHORTCUTS = ("policy shortcuts, to tell the story in minutes (policy.example.toml has the real "
             "defaults): rollout steps 5/50/100% with 2 s bakes and 80 requests per step "
             "(defaults: 900 s, 500), no warm-up, the latency gate off, no drift reference and "
             "no sensitive column (the drift and fairness gates are skipped), 10 s monitoring "
             "windows")
DEMO_STARTED = time.monotonic()
PROGRESS_EVERY_SECONDS = 5.0
Found = TypeVar("Found")


def say(text: str) -> None:
    print(f"[gatehouse demo {time.monotonic() - DEMO_STARTED:5.0f}s] {text}", flush=True)


@contextmanager
def progress(what: str, every: float = PROGRESS_EVERY_SECONDS) -> Iterator[None]:
    """While the block runs, say every `every` seconds what it waits for and for how long."""
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            say(f"   ... waiting for {what} ({time.monotonic() - started:.0f}s)")

    ticker = threading.Thread(target=tick, name="demo-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()


def wait(what: str, condition: Callable[[], Found | None], timeout: float = 60) -> Found:
    """wait_for, saying how long it has waited every few seconds."""
    with progress(what):
        found: Found = wait_for(what, condition, timeout=timeout)
    return found


class Story:
    def __init__(self, work: Path, host: devstack.FunctionHost, serving_url: str,
                 mlflow_url: str, outbox: OutboxChannel):
        from mlflow import MlflowClient

        self.work, self.host_url, self.serving_url = work, host.url, serving_url
        self.keys = host.key_headers  # the app's function-level routes want the host's key
        self.client = MlflowClient(tracking_uri=mlflow_url)
        logging.getLogger("mlflow").setLevel(logging.ERROR)  # keep the narration readable
        self.outbox = outbox
        self.seen = 0
        self.versions: dict[str, str] = {}

    def reactions(self) -> list[dict]:
        notes = self.outbox.read()
        fresh, self.seen = notes[self.seen:], len(notes)
        for note in fresh:
            say(f"   -> {describe_note(note)}")
        return fresh

    def wait_for_note(self, what: str, event_kind: str, version: str, timeout: float = 60):
        """Narrate notifications as they come until one about `event_kind` on `version` is in."""
        def arrived():
            self.reactions()
            return next((note for note in self.outbox.read()
                         if note.get("about_event_type", "").endswith(event_kind)
                         and note.get("version") == version), None)
        return wait(what, arrived, timeout=timeout)

    def gate_verdict(self, version: str) -> str:
        def verdict():
            self.reactions()
            tags = self.client.get_model_version(MODEL, version).tags
            # decided_at is written after the verdict and the blocking list
            if tags.get("gatehouse.gates.decided_at"):
                return tags
        tags = wait(f"the gate verdict on v{version}", verdict, timeout=240)
        blocking = tags.get("gatehouse.gates.blocking") or "none"
        return f"{tags['gatehouse.gates.verdict']} (blocking gates not passed: {blocking})"

    def rollout(self) -> dict:
        reply = requests.get(f"{self.host_url}/api/rollouts/{ENDPOINT}", headers=self.keys,
                             timeout=30)
        return reply.json() if reply.status_code == 200 else {}

    def rollout_of(self, version: str) -> dict | None:
        """The rollout of `version` in the rollout store, active or queued, if any."""
        record = self.rollout()
        return next((r for r in (record.get("active"), record.get("queued"))
                     if r and r.get("challenger") == version), None)

    def ramp(self) -> dict:
        return requests.post(f"{self.host_url}/api/rollouts/{ENDPOINT}/ramp", headers=self.keys,
                             timeout=120).json()

    def send_traffic(self, requests_count: int, drift: float = 0.0, seed: int = 0) -> None:
        """Single-row scoring requests from a few concurrent clients, like live traffic."""
        rows = demo_models.generate(requests_count, seed=seed, drift=drift)[demo_models.FEATURES]
        url = f"{self.serving_url}/serving-endpoints/{ENDPOINT}/invocations"
        sessions = threading.local()

        def send(numbered):
            index, record = numbered
            if not hasattr(sessions, "http"):
                sessions.http = requests.Session()
            sessions.http.post(url, json={"dataframe_records": [record]}, timeout=30,
                               headers={"X-Request-Id": f"demo-{seed}-{index}-"
                                                        f"{uuid.uuid4().hex[:6]}"})

        with ThreadPoolExecutor(TRAFFIC_CLIENTS) as clients:
            list(clients.map(send, enumerate(rows.to_dict(orient="records"))))

    def drifted_window(self, requests_count: int) -> None:
        """Drifted traffic alone in a fresh monitoring window, then wait for that window to
        close: the monitor judges complete windows only."""
        width = MONITOR_WINDOW_SECONDS
        with progress("a fresh monitoring window, filled with drifted traffic"):
            time.sleep(width - time.time() % width)
            self.send_traffic(requests_count, drift=1.0, seed=5)
            time.sleep(width - time.time() % width + 0.5)

    def champion(self) -> str | None:
        try:
            return self.client.get_model_version_by_alias(MODEL, "champion").version
        except Exception:
            return None

    def register(self, kind: str, label: str, seed: int) -> str:
        with progress(f"training and registering the {label} model"):
            version = demo_models.log_and_register(demo_models.train(kind, seed=seed), MODEL,
                                                   f"fraud-{label}")
        self.versions[version] = label
        say(f"registered v{version} ({label}); the webhook takes it from here")
        return version

    def ramp_until_done(self, version: str, traffic_seed: int) -> dict:
        """Live traffic and ramp ticks until the rollout of `version` ends."""
        with progress(f"the judge to finish the rollout of v{version}"):
            return self._ramp_until_done(version, traffic_seed)

    def _ramp_until_done(self, version: str, traffic_seed: int) -> dict:
        for tick in range(40):
            self.send_traffic(200, seed=traffic_seed * 100 + tick)
            state = self.ramp()
            active = (self.rollout() or {}).get("active")
            self.reactions()
            if not active or active.get("challenger") != version:
                return self.rollout()
            if "error" in state:
                say(f"   ramp tick: {state['error']}")
        raise TimeoutError(f"rollout of v{version} did not finish")


def warm_up_imports() -> None:
    """Import what training and logging need while the servers start, not on the first step."""
    import mlflow.sklearn  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from mlflow.models import infer_signature  # noqa: F401


def write_policy(work: Path) -> Path:
    holdout = work / "holdout.parquet"
    demo_models.generate(20000, seed=11).to_parquet(holdout)
    path = work / "policy.toml"
    path.write_text(POLICY.format(holdout=holdout, window_seconds=MONITOR_WINDOW_SECONDS))
    return path


def play(story: Story, short: bool) -> None:
    say("1) version 1: a plain classifier, the first one, becomes the champion")
    v1 = story.register("basic", "plain", seed=1)
    say(f"   gates on v{v1}: {story.gate_verdict(v1)}")
    wait("v1 to serve as champion", lambda: story.champion() == v1, timeout=120)
    story.send_traffic(60, seed=1)
    say(f"   v{v1} is @champion and serves 100% of {ENDPOINT}")

    say("2) version 2: better and well calibrated")
    v2 = story.register("good", "calibrated", seed=2)
    say(f"   gates on v{v2}: {story.gate_verdict(v2)}")
    wait("the canary of v2", lambda: (story.rollout().get("active") or {}).get(
        "challenger") == v2, timeout=120)
    say("   shadow step: live traffic mirrored to v2 (its answers go to no caller); once it "
        "agrees with v1, a 5% canary; sending live traffic and letting the judge ramp it")
    story.ramp_until_done(v2, traffic_seed=2)
    say(f"   champion now: v{story.champion()}")

    say("3) version 3: over-confident; the calibration gate should refuse it")
    v3 = story.register("overconfident", "over-confident", seed=3)
    say(f"   gates on v{v3}: {story.gate_verdict(v3)}")
    if short:
        return

    say("4) version 4: passes the gates, then fails its shadow step (injected errors), before "
        "any caller sees an answer of it")
    v4 = story.register("good", "flaky in serving", seed=4)
    say(f"   gates on v{v4}: {story.gate_verdict(v4)}")
    wait("the rollout of v4", lambda: (story.rollout().get("active") or {}).get(
        "challenger") == v4, timeout=120)
    wait("v4 to be served or mirrored to", lambda: requests.put(
        f"{story.serving_url}/gatehouse/endpoints/{ENDPOINT}/faults",
        json={v4: {"error_rate": 0.5}}, timeout=30).status_code == 200, timeout=60)
    say("   injected a 50% error rate on v4's replicas")
    story.ramp_until_done(v4, traffic_seed=4)
    story.wait_for_note("v4's rollback to complete", "rollout.rollback_completed", v4)
    say(f"   champion still: v{story.champion()}")

    say("5) traffic drifts: the monitor notices, retraining starts")
    story.drifted_window(300)
    with progress("the monitor's run over the window"):
        result = requests.post(f"{story.host_url}/api/monitor/run", json={}, headers=story.keys,
                               timeout=300).json()
    for window in result["endpoints"].get(ENDPOINT, {}).get("windows", []):
        figures = window["figures"]
        say(f"   monitor, last {result['window_seconds']:.0f}s window on v{window['version']}: "
            f"{figures.get('requests', 0):.0f} requests, feature PSI "
            f"{figures.get('feature_psi', float('nan')):.2f}, prediction PSI "
            f"{figures.get('prediction_psi', float('nan')):.2f}")
    for alert in result["endpoints"].get(ENDPOINT, {}).get("alerts", []):
        say(f"   monitor raised {alert['metric']} ({alert['status']}, {alert['value']:.3g})")
    v5 = wait("the retrained version", lambda: next(
        (mv.version for mv in story.client.search_model_versions(f"name='{MODEL}'")
         if int(mv.version) > int(v4)), None), timeout=300)
    story.versions[v5] = "retrained on drifted data"
    verdict = story.gate_verdict(v5)
    say(f"   retraining registered v{v5}; gates on it: {verdict}")
    if verdict.startswith("passed"):
        wait(f"the canary of v{v5}", lambda: story.rollout_of(v5), timeout=120)
        say(f"   v{v5} is in canary; the demo ends here, the judge would carry on ramping it")


PAGE_MARK = {"trigger": " [pages on-call]", "resolve": " [resolves the page]"}


def describe_note(note: dict) -> str:
    mark = PAGE_MARK.get(note.get("page") or "", "")
    return f"[{note.get('severity', 'info')}] {note['title']}{mark}"


def summary(story: Story) -> None:
    """What the registry, the rollout store and the outbox hold now, not what was narrated."""
    say("summary (read from the registry, the rollout store and the outbox)")
    print(f"\n  {'version':8s} {'what':28s} {'gates':13s} {'refused by':28s} aliases")
    registered = story.client.search_model_versions(f"name='{MODEL}'")
    for mv in sorted(registered, key=lambda mv: int(mv.version)):
        label = story.versions.get(mv.version, "-")
        aliases = ",".join(getattr(mv, "aliases", []) or []) or "-"
        print(f"  v{mv.version:7s} {label:28s} {mv.tags.get('gatehouse.gates.verdict', '-'):13s} "
              f"{mv.tags.get('gatehouse.gates.blocking') or '-':28s} {aliases}")

    detail = requests.get(f"{story.host_url}/api/rollouts/{ENDPOINT}", headers=story.keys,
                          timeout=30).json()
    print(f"\n  {ENDPOINT} now: champion v{detail.get('champion') or '-'}; "
          f"{describe_rollout(detail.get('active'))}")
    print(f"\n  traffic on {ENDPOINT} (each change, who made it and why):")
    for change in detail.get("history", []):
        routes = ", ".join(f"v{v} {p}%" for v, p in sorted(change["routes"].items()))
        print(f"    v{change['version']:3s} {change['action']:18s} {routes:18s} "
              f"by {change['actor']}: {change['reason'][:90]}")

    notes = story.outbox.read()
    alerts = [n for n in notes if n.get("about_event_type", "").endswith("monitoring.alert")]
    pages = [n for n in notes if n.get("page")]
    print(f"\n  alerts ({len(alerts)}):")
    for note in alerts:
        print(f"    {describe_note(note)}")
    print(f"\n  pages to on-call ({len(pages)}):")
    for note in pages:
        print(f"    {note['page']:8s} {note['title']}")
    print(f"\n  notifications ({len(notes)}; Slack, Teams and PagerDuty would get these):")
    for note in notes:
        print(f"    {describe_note(note)}")
    print()


def describe_rollout(active: dict | None) -> str:
    if not active:
        return "no rollout under way"
    routes = ", ".join(f"v{v} {p}%" for v, p in sorted(active.get("routes", {}).items()))
    return f"v{active['challenger']} {active['phase']} ({routes})"


def describe_part(part) -> str:
    where = part.url if isinstance(part, devstack.ManagedProcess) else part.connection_string
    return f"{getattr(part, 'name', 'azurite'):14s} pid {part.process.pid:<8d} {where}"


def start_stack(work: Path, secret: str, outbox: OutboxChannel, stack: list):
    """Launch every server at once and wait for them afterwards (they start in parallel); each is
    appended to `stack` as soon as it is launched, so the caller can stop it whatever happens."""
    azurite = Azurite(str(work / "azurite")).launch()
    stack.append(azurite)
    moto = devstack.moto_process(work).launch()
    stack.append(moto)
    mlflow_server = devstack.mlflow_process(work, moto.url).launch()
    stack.append(mlflow_server)
    client_env = {**devstack.mlflow_client_env(moto.url), "MLFLOW_TRACKING_URI": mlflow_server.url}
    os.environ.update(client_env)
    payload_log = work / "payloads.sqlite"
    serving_port = free_port()
    serving = devstack.ManagedProcess(
        "serving", [sys.executable, "-m", "shared.serving.embedded", "--port",
                    str(serving_port), "--payload-log", str(payload_log)],
        client_env, serving_port, work).launch()
    stack.append(serving)
    host = devstack.function_host_process(work, azurite.connection_string, {
        **client_env,
        "GATEHOUSE_MLFLOW_WEBHOOK_SECRET": secret,
        "GATEHOUSE_OUTBOX_PATH": str(outbox.path),
        "GATEHOUSE_POLICY_PATH": str(write_policy(work)),
        "GATEHOUSE_SERVING_URL": serving.url,
        "GATEHOUSE_PAYLOAD_LOG": str(payload_log),
        "GATEHOUSE_RETRAINING_RUNS_DIR": str(work / "retraining"),
        "MLFLOW_UI_URL": mlflow_server.url,
        # The demo drives the ramp and the monitor itself, step by step.
        "AzureWebJobs.ramp_traffic.Disabled": "true",
        "AzureWebJobs.monitor_endpoints.Disabled": "true",
    })
    azurite.ready()
    stack.append(host.launch())
    warm_up_imports()
    moto.ready()
    devstack.create_bucket(moto.url, devstack.ARTIFACT_BUCKET)
    mlflow_server.ready(devstack.MLFLOW_START_TIMEOUT)
    serving.ready()
    devstack.host_ready(host)
    return host, serving, mlflow_server


def register_webhook(mlflow_url: str, host_url: str, secret: str) -> str:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_experiment("fraud-demo")
    hook = MlflowClient(mlflow_url).create_webhook(
        name="gatehouse", url=f"{host_url}/api/registry/mlflow", secret=secret,
        events=["registered_model.created", "model_version.created",
                "model_version_alias.created", "model_version_tag.set"])
    return hook.webhook_id


def keep_running(stack: list) -> None:
    say("KEEP=1: the stack stays up:")
    for part in stack:
        print(f"  {describe_part(part)}", flush=True)
    say("press Ctrl+C (or kill this process) to stop it")
    threading.Event().wait()


def main() -> int:
    os.environ.update(devstack.NO_TELEMETRY)
    # `kill` (SIGTERM) stops the stack like Ctrl+C does, instead of orphaning its servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    keep = os.environ.get("KEEP", "") not in ("", "0")
    short = os.environ.get("GATEHOUSE_DEMO_SHORT", "") not in ("", "0")
    work = Path(tempfile.mkdtemp(prefix="gatehouse-demo-"))
    secret = secrets.token_urlsafe(24)
    outbox = OutboxChannel(work / "outbox.jsonl")
    stack: list = []
    started = time.monotonic()
    try:
        say(f"this demo runs as pid {os.getpid()}; its working folder {work} is removed at the "
            "end")
        say(SHORTCUTS)
        say("starting Azurite, moto's S3, an MLflow server, embedded serving and the app...")
        with progress("the stack to start (the MLflow server is the slowest)"):
            host, serving, mlflow_server = start_stack(work, secret, outbox, stack)
        hook_id = register_webhook(mlflow_server.url, host.url, secret)
        say(f"stack up in {time.monotonic() - started:.0f}s; MLflow webhook {hook_id} "
            f"points at the app")
        story = Story(work, host, serving.url, mlflow_server.url, outbox)
        play(story, short)
        summary(story)
        say(f"done in {time.monotonic() - started:.0f}s. MLflow UI: {mlflow_server.url}  "
            f"(outbox: {outbox.path})")
        if keep:
            keep_running(stack)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for part in reversed(stack):
            part.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
