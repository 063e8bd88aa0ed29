"""Timers fan out one tick per endpoint and window (marks on Azurite, in transactions of a
hundred, or one by one): a second run in the same window adds nothing, the next window ticks
again, ids are stable per window, workers drop expired ticks and refuse what is not a tick."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from shared.events import Envelope, TickDue
from shared.foundation.fanout import (
    TickMarks,
    TickTable,
    fan_out,
    take_tick,
    tick,
    tick_envelope,
)
from shared.foundation.state import MemoryTable

PERIOD = 30.0
NOW = 1_800_000_000.0  # the start of a tick window


class Sent:
    def __init__(self):
        self.messages: list[tuple[str, Envelope]] = []
        self.lock = threading.Lock()

    def __call__(self, queue: str, envelope: Envelope) -> str:
        with self.lock:
            self.messages.append((queue, envelope))
        return envelope.id

    def ids(self) -> list[str]:
        return [envelope.id for _, envelope in self.messages]


@pytest.fixture(params=["transactions", "one by one"])
def marks(storage, request) -> TickMarks:
    """Marks on Azurite, a hundred per transaction; and on a table without transactions."""
    if request.param == "transactions":
        return TickMarks(TickTable(storage, f"ticks{uuid.uuid4().hex[:12]}"))
    return TickMarks(MemoryTable())


def test_a_second_run_in_the_same_window_adds_nothing(marks):
    sent = Sent()
    endpoints = ["b", "a", "c", "a"]
    assert fan_out("ramp", "q", endpoints, NOW, PERIOD, marks, sent) == ["a", "b", "c"]
    assert fan_out("ramp", "q", endpoints, NOW + PERIOD - 1, PERIOD, marks, sent) == []
    assert len(sent.messages) == 3 and {q for q, _ in sent.messages} == {"q"}
    ticks = [envelope.data_as(TickDue) for _, envelope in sent.messages]
    assert {(t.job, t.window) for t in ticks} == {("ramp", int(NOW // PERIOD))}
    # the next window ticks every endpoint again, under new ids
    assert fan_out("ramp", "q", endpoints, NOW + PERIOD, PERIOD, marks, sent) == ["a", "b", "c"]
    assert len(set(sent.ids())) == 6
    # an endpoint new in this window gets its tick from a later run of the same window
    assert fan_out("ramp", "q", ["a", "d"], NOW + PERIOD + 5, PERIOD, marks, sent) == ["d"]


def test_jobs_are_marked_apart(marks):
    sent = Sent()
    assert fan_out("ramp", "r", ["a"], NOW, PERIOD, marks, sent) == ["a"]
    assert fan_out("monitor", "m", ["a"], NOW, 300.0, marks, sent) == ["a"]
    assert [q for q, _ in sent.messages] == ["r", "m"]


def test_overlapping_runs_enqueue_each_tick_once(marks):
    sent = Sent()
    endpoints = [f"ep-{i}" for i in range(250)]  # three transactions each
    runs = [threading.Thread(target=fan_out, args=("monitor", "q", endpoints, NOW, 300.0, marks,
                                                   sent)) for _ in range(3)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sorted(e.data.endpoint for _, e in sent.messages) == sorted(endpoints)


def test_a_tick_id_is_stable_within_its_window_only():
    first = tick_envelope(tick("ramp", "fraud", NOW, PERIOD))
    again = tick_envelope(tick("ramp", "fraud", NOW + 29, PERIOD))
    later = tick_envelope(tick("ramp", "fraud", NOW + 30, PERIOD))
    other = tick_envelope(tick("monitor", "fraud", NOW, PERIOD))
    assert first.id == again.id and len({first.id, later.id, other.id}) == 3


def test_labelled_endpoints_are_told_so(marks):
    sent = Sent()
    fan_out("monitor", "q", ["a", "b"], NOW, 300.0, marks, sent, labelled=["b", "zz"])
    assert {e.data.endpoint: e.data.labelled for _, e in sent.messages} == {"a": False,
                                                                           "b": True}


def test_a_worker_does_a_live_tick_and_drops_an_expired_one(storage_env):
    body = tick_envelope(tick("monitor", "fraud", NOW, 300.0)).to_json().encode()
    done: list[TickDue] = []

    def work(due: TickDue) -> dict:
        done.append(due)
        return {"endpoint": due.endpoint}

    assert take_tick(body, "q", "monitor_tick", work, now=lambda: NOW + 10) == {
        "endpoint": "fraud"}
    assert take_tick(body, "q", "monitor_tick", work, now=lambda: NOW + 301) is None
    assert [d.endpoint for d in done] == ["fraud"]


def test_a_worker_refuses_what_is_not_a_tick(storage_env):
    from shared.events import RegisteredModelCreated

    other = Envelope.wrap(RegisteredModelCreated(model_name="m"), source="/tests").to_json()
    with pytest.raises(ValueError, match="not schedule.tick_due"):
        take_tick(other.encode(), "q", "ramp_tick", lambda due: None)
    with pytest.raises(ValueError):
        take_tick(json.dumps({"job": "ramp"}).encode(), "q", "ramp_tick", lambda due: None)
