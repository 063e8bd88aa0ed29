"""The monitor fanned out, on Azurite and the embedded payload log: the timer enqueues one tick per
endpoint with traffic (a second run in the window adds nothing), each queue message judges its
endpoint through the monitor-ticks handler, and late labels cost one query per endpoint that has
them, none where there are none."""

from __future__ import annotations

import time
import uuid

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest

from functions.monitor import monitor_endpoints
from functions.ticks import monitor_tick
from shared.events import AlertKind, Envelope, TickDue
from shared.foundation import bus as bus_module
from shared.foundation.bus import Bus
from shared.foundation.storage import decode_queue_message
from shared.monitoring import adapters
from shared.monitoring import service as service_module
from shared.monitoring.labels import LabelStore, LabelTable
from shared.monitoring.reference import ReferenceStore
from shared.monitoring.service import MonitorStateStore
from shared.serving.payload_log import PayloadLog
from tests.monitoring.traffic import WINDOW, window_traffic

TIMER = TimerRequest(past_due=False)


@pytest.fixture
def env(storage_env, monkeypatch, tmp_path, fitted):
    events, ticks = f"events-{uuid.uuid4().hex[:12]}", f"ticks-{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(bus_module, "GATEHOUSE_EVENTS", events)
    monkeypatch.setattr(service_module, "MONITOR_TICKS", ticks)
    monkeypatch.setenv("GATEHOUSE_PAYLOAD_LOG", str(tmp_path / "payloads.sqlite"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DATABRICKS_HOST", raising=False)
    ReferenceStore.connect(storage_env).save(fitted.reference)
    return {"storage": storage_env, "events": events, "ticks": ticks,
            "log": PayloadLog(tmp_path / "payloads.sqlite")}


def last_complete_window() -> int:
    return int(time.time() // WINDOW) - 1


def serve(env, fitted, endpoint: str, window: int, shift: float = 0.0) -> dict[str, float]:
    records, labels = window_traffic(fitted, window, 300, seed=hash(endpoint) % 1000,
                                     endpoint=endpoint, shift=shift, batch=25)
    for record in records:
        env["log"].append(record)
    return labels


def take_ticks(env) -> list[bytes]:
    queue = Bus(env["storage"])._queue(env["ticks"])
    bodies = []
    for message in queue.receive_messages(max_messages=32):
        bodies.append(decode_queue_message(message.content, "base64"))
        queue.delete_message(message)
    return bodies


def test_the_timer_fans_out_and_each_tick_judges_its_endpoint(env, fitted):
    window = last_complete_window()
    calm, drifted = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("calm", "drifted"))
    serve(env, fitted, calm, window)
    serve(env, fitted, drifted, window, shift=0.8)

    monitor_endpoints(TIMER)
    monitor_endpoints(TIMER)  # an overlapping run in the same window adds nothing
    bodies = take_ticks(env)
    ticks = [Envelope.from_json(body).data_as(TickDue) for body in bodies]
    assert sorted(t.endpoint for t in ticks) == sorted([calm, drifted])
    assert all(t.job == "monitor" and not t.labelled for t in ticks)

    for body in bodies:
        monitor_tick(func.QueueMessage(body=body))
    states = MonitorStateStore.connect(env["storage"])
    assert states.load(calm).last_window == states.load(drifted).last_window == window
    published = [e.data for e in Bus(env["storage"]).peek(env["events"])]
    drift = {a.endpoint for a in published if a.alert_kind is AlertKind.FEATURE_DRIFT}
    assert drift == {drifted}

    for body in bodies:  # a redelivered tick finds its windows judged: nothing more
        monitor_tick(func.QueueMessage(body=body))
    assert len(Bus(env["storage"]).peek(env["events"])) == len(published)


class CountedLabels(LabelStore):
    """The real label store, counting the label queries the monitor makes."""

    def __init__(self, storage: str):
        super().__init__(LabelTable(storage, "gatehouselabels"))
        self.queries: list[str] = []

    def since(self, endpoint: str, since: float) -> dict[str, float]:
        self.queries.append(endpoint)
        return super().since(endpoint, since)


def test_labels_cost_one_query_where_they_exist_and_none_elsewhere(env, fitted, monkeypatch):
    window = last_complete_window()
    labelled, unlabelled = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("lab", "unl"))
    first = window - 2
    truth: dict[str, float] = {}
    for offset in range(3):
        truth.update(serve(env, fitted, labelled, first + offset))
        serve(env, fitted, unlabelled, first + offset)
    counted = CountedLabels(env["storage"])
    counted.put(labelled, truth)
    monkeypatch.setattr(adapters, "label_store", lambda connection: counted)
    monitor = adapters.build_monitor()
    # each endpoint judged up to the window before these three, then catching up on all three
    for endpoint in (labelled, unlabelled):
        monitor.tick(endpoint, (first - 1 + 1) * WINDOW + 1, endpoint == labelled)
    counted.queries.clear()

    due = monitor.due(time.time())
    assert {labelled, unlabelled} <= set(due.endpoints) and due.labelled == {labelled}
    judged = {e: monitor.tick(e, time.time(), e in due.labelled) for e in (labelled, unlabelled)}
    assert counted.queries == [labelled]
    assert [w["figures"]["labelled_rows"] for w in judged[labelled]["windows"]] == [300] * 3
    assert [w["figures"].get("labelled_rows", 0) for w in judged[unlabelled]["windows"]] == [0] * 3
