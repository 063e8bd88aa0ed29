"""The ramp timer fans out: one tick per endpoint a ramp tick has work on (an active rollout, an
outbox, a previous champion to retire), once per window; the worker ramps that one endpoint.
Records on Azurite, the stand-ins of test_effects for serving, registry and bus."""

from __future__ import annotations

import uuid

from shared.events import TickDue
from shared.foundation.fanout import TickMarks, TickTable, take_tick
from shared.rollout.machine import Phase
from tests.rollout.test_effects import CANARY, STRAIGHT_TO_100, World, start_v2

PERIOD = 30.0


def test_only_endpoints_with_work_are_due(storage):
    canary, promoted = World(storage, CANARY), World(storage, STRAIGHT_TO_100)
    start_v2(canary)
    start_v2(promoted)
    assert canary.record().active.phase is Phase.CANARY
    assert promoted.record().active is None and promoted.record().champion == "2"
    assert canary.service.due() == [canary.endpoint]
    assert promoted.service.due() == []
    # once the rollback window is over, the previous champion is to be retired: due again
    promoted.now += STRAIGHT_TO_100.rollback_window_seconds + 1
    assert promoted.service.due() == [promoted.endpoint]


def test_a_tick_from_the_queue_ramps_its_endpoint_once_per_window(storage_env):
    world = World(storage_env, CANARY)
    start_v2(world)
    marks = TickMarks(TickTable(storage_env, f"ticks{uuid.uuid4().hex[:12]}"))
    sent: list = []

    def send(queue, envelope):
        sent.append((queue, envelope))

    now = 1_800_000_000.0
    assert world.service.enqueue_ticks(now, PERIOD, marks, send) == [world.endpoint]
    assert world.service.enqueue_ticks(now + 10, PERIOD, marks, send) == []
    [(queue, envelope)] = sent
    assert queue == "ramp-ticks"

    world.now += 3600  # the canary has baked long enough
    result = take_tick(envelope.to_json().encode(), queue, "ramp_tick",
                       lambda due: world.service.ramp(due.endpoint)[0], now=lambda: now + 5)
    assert result["endpoint"] == world.endpoint and "verdict" in result
    assert envelope.data_as(TickDue).endpoint == world.endpoint
