"""Benchmark: one monitor round and one ramp round over K endpoints, fanned out over worker
processes (`python -m tests.benchmarks.bench_scale`). Prints figures; asserts nothing.

Each round runs on one Azurite (the project's own stores) with a payload log of its own:
1. setup (untimed): K endpoints with traffic in the last complete monitoring window (the monitor:
   scored rows of the test model, its reference stored, late labels on every tenth endpoint) or
   K active canaries (the ramp: records on Azurite, requests of both versions in the log);
2. W worker processes are started and warmed (imports done), as running instances would be;
3. timed: the timer's fan-out (`enqueue_ticks`: one tick per endpoint on the queue), then the
   workers drain the queue, each tick through the tick handler's path (`take_tick`), a batch of
   16 messages at a time on 16 threads, as the host runs a queue trigger (host.json batchSize).

Reported per round: the fan-out's time, the wall time until every tick is done, wall time per
endpoint (the round's cost / K) and the workers' CPU per endpoint; the rounds with W = 1 are the
baseline the W = 2 rounds are compared with (speed-up). Every round checks that each endpoint
was done once (the monitor's state reached the window; the ramp judged every canary).

Monitor ticks go through functions/ticks.py's `monitor_tick`, as deployed. Ramp ticks run
`RolloutService.ramp(endpoint)` with the rollout records on Azurite, health read from the payload
log and the registry a stand-in (a steady-state tick judges and writes no registry): the deployed
`ramp_tick` would need MLflow and a serving endpoint per canary.

Done-when target (issue 16): a monitor round over 1,000 endpoints under 60 s with two workers,
and the cost per endpoint flat from 10 to 1,000.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

WINDOW = 300.0
ROWS_PER_ENDPOINT = 200
ROWS_PER_REQUEST = 20
LABELLED_EVERY = 10
BATCH_SIZE = 16  # host.json's queues.batchSize


# ---- the ramp's collaborators (module level: the workers build the same) ----

class LogServing:
    """Every endpoint serving the canary's first step; health from the shared payload log."""

    name = "bench"

    def __init__(self, payload_log: str):
        from shared.serving.payload_log import PayloadLog

        self.log = PayloadLog(payload_log)

    def state(self, endpoint):
        from shared.serving.base import EndpointState

        return EndpointState(endpoint, endpoint, {"1": 95, "2": 5}, ready=True, updating=False,
                             config_updated_at=1.0)

    def set_traffic(self, endpoint, model_name, routes, wait_seconds=1200.0):
        return self.state(endpoint)

    def wait_ready(self, endpoint, timeout=1200.0):
        return self.state(endpoint)

    def health(self, endpoint, since):
        return self.log.health(endpoint, since, time.time())

    def recent_payloads(self, endpoint, limit):
        return []


class StandInRegistry:
    """v1 is every model's champion; writes change nothing."""

    def version(self, model, version):
        from shared.registry.client import VersionInfo

        return VersionInfo(model, str(version), None, None, {})

    def version_by_alias(self, model, alias):
        return self.version(model, "1") if alias == "champion" else None

    def set_alias(self, model, alias, version):
        return True

    def delete_alias(self, model, alias):
        return None

    def set_version_tags(self, model, version, tags):
        return {}


def ramp_service(storage: str, table: str, payload_log: str):
    from shared.foundation.bus import Bus
    from shared.rollout.policy import RolloutPolicy
    from shared.rollout.service import RolloutService
    from shared.rollout.store import RolloutStore, RolloutTable

    policy = RolloutPolicy(steps=(5, 100), replay_sample_size=0, warmup_seconds=0,
                           min_bake_seconds=10 ** 6)
    return RolloutService(RolloutStore(RolloutTable(storage, table)), LogServing(payload_log),
                          StandInRegistry(), Bus(storage), lambda model: policy)


# ---- workers ----

@dataclasses.dataclass
class Round:
    job: str
    k: int
    workers: int
    storage: str
    payload_log: str
    rollout_table: str = ""


def warm(job: str) -> None:
    """What a running instance has loaded already."""
    import numpy  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import functions.ticks  # noqa: F401
    import shared.monitoring.adapters  # noqa: F401
    import shared.monitoring.monitor  # noqa: F401
    import shared.rollout.service  # noqa: F401


def tick_work(spec: Round):
    from shared.foundation.fanout import take_tick
    from shared.foundation.queues import MONITOR_TICKS, RAMP_TICKS

    if spec.job == "monitor":
        import azure.functions as func

        from functions.ticks import monitor_tick

        return MONITOR_TICKS, lambda body: monitor_tick(func.QueueMessage(body=body))
    service = ramp_service(spec.storage, spec.rollout_table, spec.payload_log)
    return RAMP_TICKS, lambda body: take_tick(body, RAMP_TICKS, "ramp_tick",
                                              lambda due: service.ramp(due.endpoint)[0])


def worker(spec: Round, ready, go, done, expected, results) -> None:
    os.environ.update({"AzureWebJobsStorage": spec.storage,
                       "GATEHOUSE_PAYLOAD_LOG": spec.payload_log})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from azure.core.exceptions import ResourceExistsError

    from shared.foundation.storage import decode_queue_message, queue_options, queue_service

    warm(spec.job)
    queue_name, handle = tick_work(spec)
    queue = queue_service(spec.storage).get_queue_client(queue_name)
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    encoding = queue_options().message_encoding
    ready.release()
    go.wait()
    cpu = time.process_time()
    handled = 0

    retried = 0

    def one(message) -> None:
        nonlocal retried
        try:
            handle(decode_queue_message(message.content, encoding))
        except Exception as error:  # the host would retry it once its lease ran out: now
            print(f"retrying a tick: {type(error).__name__}: {error}"[:200], flush=True)
            retried += 1
            queue.update_message(message, visibility_timeout=0)
            return
        queue.delete_message(message)
        with done.get_lock():
            done.value += 1

    # As the host runs a queue trigger: a batch of messages at once (host.json batchSize).
    with ThreadPoolExecutor(BATCH_SIZE) as pool:
        while done.value < expected.value:
            messages = list(queue.receive_messages(messages_per_page=BATCH_SIZE,
                                                   max_messages=BATCH_SIZE,
                                                   visibility_timeout=300))
            if not messages:
                time.sleep(0.05)
                continue
            list(pool.map(one, messages))
            handled += len(messages)
    results.put((handled - retried, time.process_time() - cpu))


# ---- setup ----

def monitor_setup(spec: Round, fitted, window: int) -> None:
    from shared.monitoring.labels import LabelStore
    from shared.serving.payload_log import PayloadLog
    from tests.monitoring.traffic import window_traffic

    template, labels = window_traffic(fitted, window, ROWS_PER_ENDPOINT, seed=7,
                                      endpoint="template", batch=ROWS_PER_REQUEST)
    log = PayloadLog(spec.payload_log)
    store = LabelStore.connect(spec.storage)
    for index in range(spec.k):
        endpoint = endpoint_name(spec, index)
        for record in template:
            log.append(dataclasses.replace(record, endpoint=endpoint))
        if index % LABELLED_EVERY == 0:
            store.put(endpoint, labels)
    log.close()


def ramp_setup(spec: Round, now: float) -> None:
    from shared.serving.payload_log import PayloadLog, PayloadRecord

    service = ramp_service(spec.storage, spec.rollout_table, spec.payload_log)
    service.bus = StandInBus()
    log = PayloadLog(spec.payload_log)
    for index in range(spec.k):
        endpoint = endpoint_name(spec, index)
        service.start(endpoint, "2", actor="bench", reason="gates passed")
        for request in range(20):
            log.append(PayloadRecord(ts=now + request * 0.01, endpoint=endpoint,
                                     request_id=f"{endpoint}-{request}", model_name=endpoint,
                                     version="2" if request % 4 == 0 else "1", inputs="{}",
                                     outputs='{"predictions": [0.5]}', latency_ms=20.0,
                                     status=200))
    log.close()


class StandInBus:
    def publish(self, envelope):
        return envelope.id


def endpoint_name(spec: Round, index: int) -> str:
    return f"{spec.job[0]}{spec.k}w{spec.workers}x{index:05d}"


# ---- a round ----

def fan_out(spec: Round, now: float) -> int:
    from shared.foundation import runtime
    from shared.foundation.fanout import TickMarks

    marks = TickMarks.connect(spec.storage)
    if spec.job == "monitor":
        from shared.monitoring.adapters import build_monitor
        from shared.monitoring.service import enqueue_ticks

        return len(enqueue_ticks(build_monitor(), now, marks, runtime.bus().send))
    service = ramp_service(spec.storage, spec.rollout_table, spec.payload_log)
    return len(service.enqueue_ticks(now, 30.0, marks, runtime.bus().send))


def all_done(spec: Round, window: int) -> bool:
    if spec.job == "monitor":
        from shared.monitoring.service import MonitorStateStore

        judged = MonitorStateStore.connect(spec.storage).last_windows()
        return all(judged.get(endpoint_name(spec, i)) == window for i in range(spec.k))
    service = ramp_service(spec.storage, spec.rollout_table, spec.payload_log)
    records = service.store.records()
    return len(records) == spec.k and all(r.active is not None and r.active.last_error is None
                                          for r in records)


def collect(results, processes) -> tuple[int, float]:
    import queue

    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if not any(process.is_alive() for process in processes):
                raise RuntimeError("the workers died") from None


def run_round(spec: Round, fitted) -> dict:
    from shared.foundation import runtime

    os.environ.update({"AzureWebJobsStorage": spec.storage,
                       "GATEHOUSE_PAYLOAD_LOG": spec.payload_log})
    runtime.reset()
    context = multiprocessing.get_context("spawn")
    ready, go, done, expected, results = (context.Semaphore(0), context.Event(),
                                          context.Value("i", 0), context.Value("i", spec.k),
                                          context.Queue())
    processes = [context.Process(target=worker, args=(spec, ready, go, done, expected, results))
                 for _ in range(spec.workers)]
    for process in processes:
        process.start()
    for _ in processes:
        while not ready.acquire(timeout=1.0):
            if not all(process.is_alive() for process in processes):
                raise RuntimeError("a worker died while starting")
    warm(spec.job)  # the timer's instance is running already, too
    runtime.bus()
    window = None
    while window != int(time.time() // WINDOW) - 1:  # the traffic in the last complete window
        window = int(time.time() // WINDOW) - 1
        if spec.job == "monitor":
            monitor_setup(spec, fitted, window)
        else:
            ramp_setup(spec, time.time() - 10)
    go.set()
    started = time.perf_counter()
    sent = fan_out(spec, time.time())
    expected.value = sent
    fanned = time.perf_counter() - started
    per_worker = [collect(results, processes) for _ in processes]
    wall = time.perf_counter() - started
    for process in processes:
        process.join()
    cpu = sum(seconds for _, seconds in per_worker)
    return {"job": spec.job, "k": spec.k, "workers": spec.workers, "sent": sent,
            "fan_out_s": fanned, "wall_s": wall, "ms_per_endpoint": 1000 * wall / spec.k,
            "cpu_ms_per_endpoint": 1000 * cpu / spec.k,
            "split": "/".join(str(handled) for handled, _ in per_worker),
            "all_done": all_done(spec, window)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", nargs="+", default=["monitor", "ramp"])
    args = parser.parse_args()
    os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    os.environ.pop("DATABRICKS_HOST", None)
    from shared.foundation.storage import Azurite
    from tests.monitoring.traffic import fit

    fitted = fit()
    work = tempfile.mkdtemp(prefix="bench-scale-")
    azurite = Azurite(os.path.join(work, "azurite"), in_memory=True).start()
    try:
        from shared.monitoring.reference import ReferenceStore

        ReferenceStore.connect(azurite.connection_string).save(fitted.reference)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'job':8} {'K':>5} {'W':>2} {'fan-out s':>10} {'round s':>8} "
              f"{'ms/endpoint':>12} {'CPU ms/endpoint':>16} {'speed-up':>9} {'split':>10} ok")
        baseline: dict[tuple[str, int], float] = {}
        for job in args.jobs:
            for k in args.ks:
                for workers in args.workers:
                    spec = Round(job, k, workers, azurite.connection_string,
                                 os.path.join(work, f"{job}-{k}-{workers}.sqlite"),
                                 f"bench{uuid.uuid4().hex[:10]}")
                    figures = run_round(spec, fitted)
                    baseline.setdefault((job, k), figures["wall_s"])
                    speedup = baseline[(job, k)] / figures["wall_s"]
                    print(f"{job:8} {k:>5} {workers:>2} {figures['fan_out_s']:>10.2f} "
                          f"{figures['wall_s']:>8.2f} {figures['ms_per_endpoint']:>12.1f} "
                          f"{figures['cpu_ms_per_endpoint']:>16.1f} {speedup:>8.2f}x "
                          f"{figures['split']:>10} {figures['all_done']}", flush=True)
    finally:
        azurite.stop()


if __name__ == "__main__":
    main()
