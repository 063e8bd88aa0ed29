"""`make demo`: the whole Gatehouse story on the embedded stack, narrated.

Starts Azurite, moto's S3, a real `mlflow server`, the embedded serving endpoint and the Function
App on the local host, registers a signed MLflow webhook, then:
  1. version 1 of a fraud classifier: gates, then it serves 100% as the first @champion;
  2. version 2, better and calibrated: gates pass, 5% canary, live traffic, judged ramp, promotion;
  3. version 3, over-confident: refused by the calibration gate, with the reliability diagram;
  4. version 4 passes the gates but fails in canary (injected errors): automatic rollback, a page;
  5. traffic drifts: the monitor raises a drift alert, retraining registers version 5, which goes
     through the gates by itself.
Ends with a summary. KEEP=1 leaves the stack running; GATEHOUSE_DEMO_SHORT=1 (CI) stops after
step 3.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

from shared import demo_models, devstack
from shared.devstack import wait_for
from shared.channels.outbox import OutboxChannel
from shared.storage import Azurite, free_port

MODEL = "fraud"
ENDPOINT = "fraud"
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
min_requests_per_step = 120
warmup_seconds = 0
max_p99_latency_ratio = 4.0
max_error_rate = 0.02
replay_sample_size = 20

[defaults.monitoring]
window_seconds = 20
min_rows = 100
min_labelled_rows = 1000000
min_requests = 20

[defaults.monitoring.retraining]
entrypoint = "python -m shared.demo_models --retrain --model {{model}}"
cooldown_seconds = 3600
"""


def say(text: str) -> None:
    print(f"[gatehouse demo] {text}", flush=True)


class Story:
    def __init__(self, work: Path, host_url: str, serving_url: str, mlflow_url: str,
                 outbox: OutboxChannel):
        from mlflow import MlflowClient

        self.work, self.host_url, self.serving_url = work, host_url, serving_url
        self.client = MlflowClient(tracking_uri=mlflow_url)
        self.outbox = outbox
        self.seen = 0
        self.versions: dict[str, str] = {}
        self.traffic: list[str] = []

    def reactions(self) -> list[dict]:
        notes = self.outbox.read()
        fresh, self.seen = notes[self.seen:], len(notes)
        for note in fresh:
            say(f"   -> [{note.get('severity', 'info')}] {note['title']}")
        return fresh

    def gate_verdict(self, version: str) -> str:
        def verdict():
            self.reactions()
            tags = self.client.get_model_version(MODEL, version).tags
            if tags.get("gatehouse.gates.decided_at"):  # written after the verdict and blocking list
                return tags
        tags = wait_for(f"the gate verdict on v{version}", verdict, timeout=240)
        blocking = tags.get("gatehouse.gates.blocking") or "none"
        return f"{tags['gatehouse.gates.verdict']} (blocking gates not passed: {blocking})"

    def rollout(self) -> dict:
        reply = requests.get(f"{self.host_url}/api/rollouts/{ENDPOINT}", timeout=30)
        return reply.json() if reply.status_code == 200 else {}

    def ramp(self) -> dict:
        return requests.post(f"{self.host_url}/api/rollouts/{ENDPOINT}/ramp", timeout=120).json()

    def send_traffic(self, requests_count: int, drift: float = 0.0, seed: int = 0) -> None:
        rows = demo_models.generate(requests_count, seed=seed, drift=drift)[demo_models.FEATURES]
        session = requests.Session()
        for index, record in enumerate(rows.to_dict(orient="records")):
            session.post(f"{self.serving_url}/serving-endpoints/{ENDPOINT}/invocations",
                         json={"dataframe_records": [record]},
                         headers={"X-Request-Id": f"demo-{seed}-{index}-{uuid.uuid4().hex[:6]}"},
                         timeout=30)

    def champion(self) -> str | None:
        try:
            return self.client.get_model_version_by_alias(MODEL, "champion").version
        except Exception:
            return None

    def register(self, kind: str, label: str, seed: int) -> str:
        version = demo_models.log_and_register(demo_models.train(kind, seed=seed), MODEL,
                                               f"fraud-{label}")
        self.versions[version] = label
        say(f"registered v{version} ({label}); the webhook takes it from here")
        return version

    def ramp_until_done(self, version: str, traffic_seed: int) -> dict:
        """Live traffic and ramp ticks until the rollout of `version` ends."""
        for tick in range(40):
            self.send_traffic(150, seed=traffic_seed * 100 + tick)
            state = self.ramp()
            active = (self.rollout() or {}).get("active")
            self.reactions()
            if not active or active.get("challenger") != version:
                return self.rollout()
            percent = (active.get("routes") or {}).get(version)
            if not self.traffic or self.traffic[-1] != f"v{version}: {percent}%":
                self.traffic.append(f"v{version}: {percent}%")
            if "error" in state:
                say(f"   ramp tick: {state['error']}")
        raise TimeoutError(f"rollout of v{version} did not finish")


def write_policy(work: Path) -> Path:
    holdout = work / "holdout.parquet"
    demo_models.generate(20000, seed=11).to_parquet(holdout)
    path = work / "policy.toml"
    path.write_text(POLICY.format(holdout=holdout))
    return path


def play(story: Story, short: bool) -> None:
    say("1) version 1: a plain classifier, the first one, becomes the champion")
    v1 = story.register("basic", "plain", seed=1)
    say(f"   gates on v{v1}: {story.gate_verdict(v1)}")
    wait_for("v1 to serve as champion", lambda: story.champion() == v1, timeout=120)
    story.send_traffic(60, seed=1)
    say(f"   v{v1} is @champion and serves 100% of {ENDPOINT}")

    say("2) version 2: better and well calibrated")
    v2 = story.register("good", "calibrated", seed=2)
    say(f"   gates on v{v2}: {story.gate_verdict(v2)}")
    wait_for("the canary of v2", lambda: (story.rollout().get("active") or {}).get(
        "challenger") == v2, timeout=120)
    say("   5% canary started; sending live traffic and letting the judge ramp it")
    story.ramp_until_done(v2, traffic_seed=2)
    say(f"   champion now: v{story.champion()}")

    say("3) version 3: over-confident; the calibration gate should refuse it")
    v3 = story.register("overconfident", "over-confident", seed=3)
    say(f"   gates on v{v3}: {story.gate_verdict(v3)}")
    if short:
        return

    say("4) version 4: passes the gates, then fails in canary (injected errors)")
    v4 = story.register("good", "flaky in serving", seed=4)
    say(f"   gates on v{v4}: {story.gate_verdict(v4)}")
    wait_for("the canary of v4", lambda: (story.rollout().get("active") or {}).get(
        "challenger") == v4, timeout=120)
    wait_for("v4 to be served", lambda: requests.put(
        f"{story.serving_url}/gatehouse/endpoints/{ENDPOINT}/faults",
        json={v4: {"error_rate": 0.5}}, timeout=30).status_code == 200, timeout=60)
    say("   injected a 50% error rate on v4's replicas")
    story.ramp_until_done(v4, traffic_seed=4)
    say(f"   champion still: v{story.champion()}")

    say("5) traffic drifts: the monitor notices, retraining starts")
    started = time.time()
    story.send_traffic(300, drift=1.0, seed=5)
    time.sleep(max(0.0, 21 - (time.time() - started)))
    result = requests.post(f"{story.host_url}/api/monitor/run", json={}, timeout=300).json()
    say(f"   monitor: {json.dumps(result)[:200]}")
    v5 = wait_for("the retrained version", lambda: next(
        (mv.version for mv in story.client.search_model_versions(f"name='{MODEL}'")
         if int(mv.version) > int(v4)), None), timeout=300)
    story.versions[v5] = "retrained on drifted data"
    say(f"   retraining registered v{v5}; gates on it: {story.gate_verdict(v5)}")


def summary(story: Story) -> None:
    say("summary")
    print(f"  {'version':8s} {'what':28s} {'gates':8s} {'aliases':20s}")
    for version, label in sorted(story.versions.items(), key=lambda kv: int(kv[0])):
        mv = story.client.get_model_version(MODEL, version)
        aliases = ",".join(getattr(mv, "aliases", []) or []) or "-"
        print(f"  v{version:7s} {label:28s} {mv.tags.get('gatehouse.gates.verdict', '-'):8s} "
              f"{aliases:20s}")
    history = requests.get(f"{story.host_url}/api/rollouts/{ENDPOINT}", timeout=30).json()
    print(f"  rollouts: {json.dumps(history.get('last') or {}, default=str)[:300]}")
    print(f"  traffic steps seen: {', '.join(story.traffic) or '-'}")
    notes = story.outbox.read()
    print(f"  notifications ({len(notes)}):")
    for note in notes:
        print(f"    [{note.get('severity', 'info'):8s}] {note['title']}")


def main() -> int:
    os.environ.update(devstack.NO_TELEMETRY)
    keep = os.environ.get("KEEP", "") not in ("", "0")
    short = os.environ.get("GATEHOUSE_DEMO_SHORT", "") not in ("", "0")
    work = Path(tempfile.mkdtemp(prefix="gatehouse-demo-"))
    secret = secrets.token_urlsafe(24)
    outbox = OutboxChannel(work / "outbox.jsonl")
    stack = []
    started = time.monotonic()
    try:
        say("starting Azurite, moto's S3, an MLflow server, embedded serving and the app...")
        azurite = Azurite(str(work / "azurite")).start()
        stack.append(azurite)
        moto = devstack.start_moto(work)
        stack.append(moto)
        mlflow_server = devstack.start_mlflow(work, moto.url)
        stack.append(mlflow_server)
        client_env = devstack.mlflow_client_env(moto.url)
        os.environ.update(client_env)
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_server.url
        payload_log = work / "payloads.sqlite"
        serving_port = free_port()
        serving = devstack.ManagedProcess(
            "serving", [sys.executable, "-m", "shared.serving.embedded", "--port",
                        str(serving_port), "--payload-log", str(payload_log)],
            {**client_env, "MLFLOW_TRACKING_URI": mlflow_server.url}, serving_port, work).start()
        stack.append(serving)
        host = devstack.start_function_host(work, azurite.connection_string, {
            **client_env,
            "MLFLOW_TRACKING_URI": mlflow_server.url,
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
        stack.append(host)
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_experiment("fraud-demo")
        hook = MlflowClient(mlflow_server.url).create_webhook(
            name="gatehouse", url=f"{host.url}/api/registry/mlflow", secret=secret,
            events=["registered_model.created", "model_version.created",
                    "model_version_alias.created", "model_version_tag.set"])
        say(f"stack up in {time.monotonic() - started:.0f}s; MLflow webhook {hook.webhook_id} "
            f"points at the app")
        story = Story(work, host.url, serving.url, mlflow_server.url, outbox)
        play(story, short)
        summary(story)
        say(f"done in {time.monotonic() - started:.0f}s. MLflow UI: {mlflow_server.url}  "
            f"(outbox: {outbox.path})")
        if keep:
            say("KEEP=1: the stack stays up; press Ctrl+C to stop it")
            threading.Event().wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for part in reversed(stack):
            part.stop()


if __name__ == "__main__":
    sys.exit(main())
