"""The notification state stores (dedup and delivery records, Slack threads, open PagerDuty
incidents) on a MemoryTable; test_dispatch.py runs them on Azurite."""

from __future__ import annotations

import pytest

from shared.channels.base import ChannelError
from shared.channels.dispatch import NotificationState
from shared.channels.pagerduty import MAX_HELD, OpenIncident, OpenIncidents
from shared.channels.slack import SlackThreads, Thread
from shared.foundation.state import MemoryTable, safe_row_key
from tests.notifications import builders


class Busy(MemoryTable):
    """A table whose rows another writer changes between every read and write."""

    def replace(self, partition, row, properties, etag):
        current = self.get(partition, row)
        super().replace(partition, row, {**current.properties, "other": "writer"}, current.etag)
        return super().replace(partition, row, properties, etag)


def test_repeats_within_the_window_collapse_into_the_original():
    state = NotificationState(MemoryTable())
    assert state.register("k", "e1", now=100, window_seconds=60) is None
    state.remember_ref("k", "e1", "slack", {"ts": "1.0"})
    assert state.register("k", "e1", now=110, window_seconds=60) is None  # redelivered
    repeat = state.register("k", "e2", now=120, window_seconds=60)
    assert (repeat.original_event_id, repeat.count) == ("e1", 2)
    assert repeat.refs == {"slack": {"ts": "1.0"}}
    assert state.register("k", "e2", now=130, window_seconds=60).count == 2  # redelivered repeat
    assert state.register("k", "e3", now=200, window_seconds=60) is None  # past the window


def test_deliveries_and_failures_are_recorded():
    state = NotificationState(MemoryTable())
    envelope = builders.notification_envelope(builders.rollback_requested("m", "m-prod"))
    state.record_failure(envelope, "teams", "Teams webhook answered 500", transient=True)
    failed = state.record_failure(envelope, "teams", "Teams webhook answered 500", True)
    assert failed["attempts"] == 2
    assert [f["channel"] for f in state.failures()] == ["teams"]
    state.record_delivered(envelope.id, "teams", {"status": 202})
    assert state.delivery(envelope.id, "teams")["status"] == "delivered"
    assert state.failures() == []


def test_a_state_row_that_keeps_changing_is_a_transient_channel_error():
    table = Busy()
    table.insert(NotificationState.DEDUP, safe_row_key("k"), {"event_id": "e0", "first_seen": 0})
    with pytest.raises(ChannelError, match="kept changing") as error:
        NotificationState(table).register("k", "e1", now=100, window_seconds=60)
    assert error.value.transient


def test_one_worker_opens_a_slack_thread_the_others_wait_or_take_over_a_stale_lease():
    threads = SlackThreads(MemoryTable(), lease_seconds=60)
    claim = threads.open_or_claim("m/1", now=1000)
    assert isinstance(claim, str)
    with pytest.raises(ChannelError, match="another worker") as busy:
        threads.open_or_claim("m/1", now=1010)
    assert busy.value.transient
    taken_over = threads.open_or_claim("m/1", now=1061)  # the first worker died
    threads.opened("m/1", taken_over, "C1", "1.0", "e1", "2026-01-01T00:00:00+00:00")
    found = threads.open_or_claim("m/1", now=1062)
    assert found == Thread("m/1", "C1", "1.0", "e1", "2026-01-01T00:00:00+00:00")
    threads.advance("m/1", "e2", "2026-01-01T00:01:00+00:00")
    assert threads.get("m/1").latest_event_id == "e2"
    threads.advance("unknown", "e3", "")  # nothing to advance: no row is created
    assert threads.get("unknown") is None


def test_a_released_claim_lets_the_next_worker_open_the_thread():
    threads = SlackThreads(MemoryTable())
    threads.release("m/1", threads.open_or_claim("m/1", now=1000))
    assert isinstance(threads.open_or_claim("m/1", now=1001), str)


def test_open_incidents_and_held_alerts_of_a_scope():
    incidents = OpenIncidents(MemoryTable())
    incidents.opened("model:m", OpenIncident("gatehouse/m/e/latency", 100.0, "e"))
    for n in range(MAX_HELD):
        assert incidents.hold("model:m", f"k{n}", {"held_at": n, "trigger": {}})
    assert incidents.hold("model:m", "k0", {"held_at": 99, "trigger": {}})  # again: kept
    assert not incidents.hold("model:m", "one-too-many", {"held_at": 0, "trigger": {}})
    note = builders.notification_envelope(builders.alert("m", status="resolved")).data
    remaining, held = incidents.closed("model:m", ("gatehouse/m/e/latency", "k1"), note)
    assert remaining == {}
    assert len(held) == MAX_HELD - 1 and held["k0"]["held_at"] == 0
    assert incidents.read("model:m") == (remaining, held)
