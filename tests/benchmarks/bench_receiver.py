"""Benchmarks for the webhook path (`make bench`). Prints figures; asserts nothing.

1. Cold import: a fresh interpreter importing `function_app`, against one importing
   `azure.functions` alone, in the same run (median of several runs, and the ratio).
   Target: ratio <= 2.0.
2. Verify + parse + dedupe + enqueue per signed webhook over loopback HTTP through the local
   Functions host on Azurite (p50/p99 over 1,000 deliveries). Target: p99 < 20 ms. Beside it, in
   the same run: GET /api/health (HTTP and host overhead alone), verify+parse alone in-process,
   and one bare `QueueClient.send_message` to the same Azurite: a webhook costs three storage
   round trips (claim the delivery id, enqueue, mark it done), so that is the floor to compare to.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from shared.dev import devstack
from shared.foundation.storage import PROJECT_ROOT, Azurite
from shared.intake import inbound, signatures
from shared.intake.signatures import mlflow_signature

SECRET = "bench-secret"


def cold_import_seconds(modules: list[str], runs: int) -> dict[str, list[float]]:
    """Whole-process import time per module; runs interleaved so both see the same machine."""
    timings: dict[str, list[float]] = {module: [] for module in modules}
    for _ in range(runs + 1):
        for module in modules:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import {module}"], cwd=PROJECT_ROOT,
                           check=True)
            timings[module].append(time.perf_counter() - started)
    return {module: values[1:] for module, values in timings.items()}  # first run warms caches


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def signed_delivery(model: str, version: int) -> tuple[bytes, dict]:
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": "2026-11-25T12:00:00+00:00",
                       "data": {"name": model, "version": str(version), "source": "models:/m",
                                "run_id": None, "tags": {}, "description": None}}).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
                  "X-MLflow-Timestamp": stamp,
                  "X-MLflow-Signature": mlflow_signature(SECRET, delivery, stamp, body)}


def timed_requests(send, count: int) -> list[float]:
    timings = []
    for index in range(count):
        started = time.perf_counter()
        send(index)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main(deliveries: int = 1000, import_runs: int = 7) -> None:
    imports = cold_import_seconds(["azure.functions", "function_app"], import_runs)
    baseline, app = imports["azure.functions"], imports["function_app"]
    ratio = statistics.median(app) / statistics.median(baseline)
    print(f"cold import  azure.functions  median {statistics.median(baseline) * 1000:7.1f} ms")
    print(f"cold import  function_app     median {statistics.median(app) * 1000:7.1f} ms")
    print(f"cold import ratio {ratio:.2f} (target <= 2.0) {'OK' if ratio <= 2.0 else 'MISSED'}")

    logs = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    azurite = Azurite(str(logs / "azurite")).start()
    host = devstack.start_function_host(logs, azurite.connection_string, {
        "GATEHOUSE_MLFLOW_WEBHOOK_SECRET": SECRET,
        "GATEHOUSE_OUTBOX_PATH": str(logs / "outbox.jsonl"),
        # Only the receiver is measured: keep the queue consumers from competing for the CPU.
        "AzureWebJobs.route_registry_event.Disabled": "true",
        "AzureWebJobs.route_gatehouse_event.Disabled": "true",
        "AzureWebJobs.notify.Disabled": "true",
    })
    try:
        session = requests.Session()
        session.get(f"{host.url}/api/health").raise_for_status()
        health = timed_requests(lambda i: session.get(f"{host.url}/api/health").raise_for_status(),
                                deliveries)
        model = f"bench-{uuid.uuid4().hex[:6]}"
        signed_delivery(model, 0)

        def deliver(index: int) -> None:
            body, headers = signed_delivery(model, index + 1)
            reply = session.post(f"{host.url}/api/registry/mlflow", data=body, headers=headers)
            if reply.status_code != 202:
                raise RuntimeError(f"delivery {index} answered {reply.status_code}: {reply.text}")

        deliver(-1)  # warm: first request loads the schema and the storage clients
        webhook = timed_requests(deliver, deliveries)

        samples = [signed_delivery(model, i) for i in range(deliveries)]

        def verify_and_parse(index: int) -> None:
            body, headers = samples[index]
            signatures.mlflow_delivery(headers, body, SECRET, time.time(), 300)
            inbound.parse_mlflow(body)

        in_process = timed_requests(verify_and_parse, deliveries)
        from azure.storage.queue import QueueClient

        bare = QueueClient.from_connection_string(azurite.connection_string, "bench-baseline")
        bare.create_queue()
        bare.send_message("warm")
        bare_send = timed_requests(lambda i: bare.send_message(samples[i][0].decode()), deliveries)
    finally:
        host.stop()
        azurite.stop()
    for name, values in (("GET /api/health (baseline)", health),
                         ("verify+parse in-process", in_process),
                         ("bare SDK send_message", bare_send),
                         ("POST /api/registry/mlflow", webhook)):
        print(f"{name:28s} p50 {percentile(values, 50):6.2f} ms  "
              f"p99 {percentile(values, 99):6.2f} ms"
              f"  over {len(values)}")
    p99 = percentile(webhook, 99)
    print(f"webhook p99 {p99:.2f} ms (target < 20 ms) {'OK' if p99 < 20 else 'MISSED'}; "
          f"p50 = {percentile(webhook, 50) / percentile(bare_send, 50):.1f}x one bare storage "
          f"send (the path makes 3 storage calls)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
