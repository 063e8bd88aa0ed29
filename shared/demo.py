"""`make demo`: the registry-webhook flow on the embedded stack, narrated.

Starts Azurite, moto's S3, a real `mlflow server` and the local Functions host; registers a signed
webhook; trains and registers a fraud-style classifier; and shows each reaction as it arrives in
the notification outbox. Set KEEP=1 to leave the stack running afterwards.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

from shared import devstack
from shared.channels.outbox import OutboxChannel
from shared.storage import Azurite


def say(text: str) -> None:
    print(f"[gatehouse demo] {text}", flush=True)


def fraud_data(rows: int = 2000, seed: int = 7):
    """A synthetic card-fraud table: amount, hour, distance from home, merchant risk."""
    import numpy as np

    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 1.0, rows)
    hour = rng.integers(0, 24, rows)
    distance = rng.exponential(10, rows)
    merchant_risk = rng.beta(2, 8, rows)
    logit = -4 + 0.004 * amount + 0.9 * (hour < 5) + 0.03 * distance + 3 * merchant_risk
    fraud = rng.random(rows) < 1 / (1 + np.exp(-logit))
    features = np.column_stack([amount, hour, distance, merchant_risk])
    return features, fraud.astype(int)


def wait_for_notifications(outbox: OutboxChannel, seen: int, want: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        notes = outbox.read()
        if len(notes) >= seen + want:
            return notes[seen:]
        time.sleep(0.2)
    return outbox.read()[seen:]


def main() -> int:
    keep = os.environ.get("KEEP", "") not in ("", "0")
    work = Path(tempfile.mkdtemp(prefix="gatehouse-demo-"))
    secret = secrets.token_urlsafe(24)
    outbox = OutboxChannel(work / "outbox.jsonl")
    stack = []
    try:
        say("starting Azurite (queues and tables)...")
        azurite = Azurite(str(work / "azurite")).start()
        stack.append(azurite)
        say("starting moto's S3 and a real MLflow server on SQLite (about 20 s)...")
        moto = devstack.start_moto(work)
        stack.append(moto)
        mlflow_server = devstack.start_mlflow(work, moto.url)
        stack.append(mlflow_server)
        say("starting the Gatehouse Function App on the local host...")
        host = devstack.start_function_host(work, azurite.connection_string, {
            "GATEHOUSE_MLFLOW_WEBHOOK_SECRET": secret,
            "GATEHOUSE_OUTBOX_PATH": str(outbox.path),
        })
        stack.append(host)

        import mlflow
        from mlflow import MlflowClient
        from sklearn.linear_model import LogisticRegression

        os.environ.update(devstack.mlflow_client_env(moto.url))
        mlflow.set_tracking_uri(mlflow_server.url)
        client = MlflowClient(tracking_uri=mlflow_server.url)
        hook = client.create_webhook(
            name="gatehouse", url=f"{host.url}/api/registry/mlflow", secret=secret,
            events=["registered_model.created", "model_version.created",
                    "model_version_alias.created", "model_version_tag.set"])
        result = client.test_webhook(hook.webhook_id)
        say(f"MLflow webhook registered and tested: HTTP {result.response_status}")
        seen = len(wait_for_notifications(outbox, 0, 1, timeout=20))

        say("training version 1 of the fraud classifier and registering it...")
        features, labels = fraud_data()
        mlflow.set_experiment("fraud-demo")
        with mlflow.start_run(run_name="fraud-v1"):
            model = LogisticRegression(max_iter=1000).fit(features, labels)
            mlflow.log_metric("train_accuracy", model.score(features, labels))
            mlflow.sklearn.log_model(model, name="model", registered_model_name="fraud",
                                     input_example=features[:2])
        for note in wait_for_notifications(outbox, seen, 2):
            say(f"  reaction -> {note['title']}: {note['text']}")
        seen = len(outbox.read())
        client.set_registered_model_alias("fraud", "champion", "1")
        say("set @champion on version 1")
        for note in wait_for_notifications(outbox, seen, 1):
            say(f"  reaction -> {note['title']}: {note['text']}")

        notes = outbox.read()
        say("summary")
        print(f"  {'event':40s} {'model':10s} {'version':8s} notification")
        for note in notes:
            print(f"  {note['about_event_type']:40s} {note.get('model_name', ''):10s} "
                  f"{note.get('version', '') or '':8s} {note['title']}")
        say(f"notifications written to {outbox.path}")
        say(f"MLflow UI: {mlflow_server.url}")
        if keep:
            say("KEEP=1: the stack stays up; press Ctrl+C to stop it")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for part in reversed(stack):
            part.stop()


if __name__ == "__main__":
    sys.exit(main())
