"""Benchmarks for the webhook path (`make bench`). Prints figures; asserts nothing.

1. Cold import: a fresh interpreter importing `function_app`, against one importing
   `azure.functions` alone, in the same run (median of several runs, and the ratio).
   Target: ratio <= 2.0.
2. Verify + parse + enqueue per signed webhook over loopback HTTP through the local Functions
   host on Azurite (p50/p99 over 1,000 deliveries). Target: p99 < 20 ms. Beside it, in the same
   run: GET /api/health (HTTP and host overhead alone), and one bare `QueueClient.send_message`
   to the same Azurite, the floor of a path that makes one storage call.
3. The receiver in-process against the three-round-trip design it replaced (claim the delivery
   id, enqueue, mark it done: `baseline_receive` below), interleaved on the same Azurite.
4. The claim-check path: a 200 KB signed `model_version.created` (a long description), over
   HTTP and in-process: one blob upload and one queue send.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from shared.dev import devstack
from shared.events import Envelope
from shared.foundation.bus import Bus
from shared.foundation.idempotency import IdempotencyStore
from shared.foundation.queues import REGISTRY_EVENTS
from shared.foundation.settings import Settings
from shared.foundation.storage import PROJECT_ROOT, Azurite
from shared.intake import inbound, receiver, signatures
from shared.intake.signatures import mlflow_signature

SECRET = "bench-secret"
TOLERANCE = 300.0
DELIVERY_TTL = 7 * 24 * 3600.0


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


def signed_delivery(model: str, version: int, description: str | None = None) -> tuple[bytes,
                                                                                        dict]:
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": "2026-11-25T12:00:00+00:00",
                       "data": {"name": model, "version": str(version), "source": "models:/m",
                                "run_id": None, "tags": {},
                                "description": description}}).encode()
    delivery, stamp = str(uuid.uuid4()), str(int(time.time()))
    return body, {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
                  "X-MLflow-Timestamp": stamp,
                  "X-MLflow-Signature": mlflow_signature(SECRET, delivery, stamp, body)}


def baseline_receive(headers: dict, body: bytes, bus: Bus, store: IdempotencyStore) -> None:
    """The webhook path before the claim-free receiver: verify, parse, then three storage round
    trips (claim the delivery id, enqueue, mark the delivery complete)."""
    delivery_id, _ = signatures.mlflow_delivery(headers, body, SECRET, time.time(), TOLERANCE)
    parsed = inbound.parse_mlflow(body)
    assert isinstance(parsed, inbound.Accepted)
    envelope = Envelope.wrap(parsed.payload, source=receiver.EVENT_SOURCES["mlflow"],
                             dedupe_key=delivery_id, time=parsed.occurred_at)
    claim = store.claim("delivery-mlflow", delivery_id)
    bus.send(REGISTRY_EVENTS, envelope)
    store.complete(claim, {"event_id": envelope.id}, ttl_seconds=DELIVERY_TTL)


def timed_requests(send: Callable[[int], object], count: int) -> list[float]:
    timings = []
    for index in range(count):
        started = time.perf_counter()
        send(index)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def interleaved(first: Callable[[int], object], second: Callable[[int], object],
                count: int) -> tuple[list[float], list[float]]:
    """Both paths timed in alternation, so both see the same machine and the same storage."""
    one: list[float] = []
    two: list[float] = []
    for index in range(count):
        for path, timings in ((first, one), (second, two)):
            started = time.perf_counter()
            path(index)
            timings.append((time.perf_counter() - started) * 1000)
    return one, two


def report(name: str, values: list[float]) -> None:
    print(f"{name:44s} p50 {percentile(values, 50):6.2f} ms  p99 {percentile(values, 99):6.2f} ms"
          f"  over {len(values)}")


def main(deliveries: int = 1000, import_runs: int = 7, large_deliveries: int = 200) -> None:
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
    model = f"bench-{uuid.uuid4().hex[:6]}"
    large_description = "A long model card. " * 10_600  # ~200 KB of body
    try:
        session = requests.Session()
        session.get(f"{host.url}/api/health").raise_for_status()
        health = timed_requests(lambda i: session.get(f"{host.url}/api/health").raise_for_status(),
                                deliveries)

        def post(body: bytes, headers: dict) -> None:
            reply = session.post(f"{host.url}/api/registry/mlflow", data=body, headers=headers)
            if reply.status_code != 202:
                raise RuntimeError(f"delivery answered {reply.status_code}: {reply.text}")

        post(*signed_delivery(model, 0))  # warm: the schema and the storage clients load
        webhook = timed_requests(lambda i: post(*signed_delivery(model, i + 1)), deliveries)
        post(*signed_delivery(model, 0, large_description))  # warm: the blob client loads
        large_samples = [signed_delivery(model, i, large_description)
                         for i in range(large_deliveries)]
        large_body = len(large_samples[0][0])
        webhook_large = timed_requests(lambda i: post(*large_samples[i]), large_deliveries)

        settings = Settings(mlflow_webhook_secret=SECRET, webhook_tolerance_seconds=TOLERANCE)
        bus, store = Bus(azurite.connection_string), IdempotencyStore.connect(
            azurite.connection_string)
        samples = [signed_delivery(model, i) for i in range(deliveries + 1)]
        again = [signed_delivery(model, i) for i in range(deliveries + 1)]

        def new_design(index: int) -> None:
            body, headers = samples[index]
            reply = receiver.receive("mlflow", headers, body, settings, queue=bus)
            assert reply.status == 202, reply.body

        def three_round_trips(index: int) -> None:
            body, headers = again[index]
            baseline_receive(headers, body, bus, store)

        new_design(deliveries)  # warm, with deliveries of their own
        three_round_trips(deliveries)
        in_process_new, in_process_baseline = interleaved(new_design, three_round_trips,
                                                          deliveries)
        large_again = [signed_delivery(model, i, large_description)
                       for i in range(large_deliveries)]

        def large_in_process(index: int) -> None:
            body, headers = large_again[index]
            assert receiver.receive("mlflow", headers, body, settings, queue=bus).status == 202

        in_process_large = timed_requests(large_in_process, large_deliveries)

        def verify_and_parse(index: int) -> None:
            body, headers = samples[index]
            signatures.mlflow_delivery(headers, body, SECRET, time.time(), TOLERANCE)
            inbound.parse_mlflow(body)

        parse_only = timed_requests(verify_and_parse, deliveries)
        from azure.storage.queue import QueueClient

        bare = QueueClient.from_connection_string(azurite.connection_string, "bench-baseline")
        bare.create_queue()
        bare.send_message("warm")
        bare_send = timed_requests(lambda i: bare.send_message(samples[i][0].decode()), deliveries)
    finally:
        host.stop()
        azurite.stop()
    print("-- over HTTP through the local Functions host --")
    report("GET /api/health (host overhead)", health)
    report("POST /api/registry/mlflow", webhook)
    report(f"POST /api/registry/mlflow, {large_body // 1000} KB (claim check)", webhook_large)
    print("-- in-process, interleaved on the same Azurite --")
    report("verify+parse alone", parse_only)
    report("bare SDK send_message (one round trip)", bare_send)
    report("receiver: enqueue only (this design)", in_process_new)
    report("baseline: claim + enqueue + complete", in_process_baseline)
    report(f"receiver, {large_body // 1000} KB: upload + enqueue", in_process_large)
    p99 = percentile(webhook, 99)
    print(f"webhook p99 {p99:.2f} ms (target < 20 ms) {'OK' if p99 < 20 else 'MISSED'}; "
          f"in-process p50 {percentile(in_process_new, 50):.2f} ms against "
          f"{percentile(in_process_baseline, 50):.2f} ms for the three-round-trip baseline "
          f"({percentile(in_process_baseline, 50) / percentile(in_process_new, 50):.1f}x)")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
