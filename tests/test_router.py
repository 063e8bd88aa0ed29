"""The router forwards events to handler queues and asks for notifications, once per event."""

from __future__ import annotations

import uuid

import azure.functions as func
import pytest

from functions import router
from shared import routing
from shared.events import Decision, Envelope, GatesPassed, ModelVersionCreated, ModelVersionTagSet
from shared.foundation import queues
from shared.foundation.bus import Bus


@pytest.fixture
def bus(storage_env) -> Bus:
    return Bus(storage_env)


def drain(bus: Bus, queue: str) -> list[Envelope]:
    found = []
    client = bus._queue(queue)
    for message in client.receive_messages(max_messages=32):
        from shared.foundation.storage import decode_queue_message

        found.append(Envelope.from_json(decode_queue_message(message.content, bus.encoding)))
        client.delete_message(message)
    return found


def deliver(envelope: Envelope) -> None:
    router.route_gatehouse_event(func.QueueMessage(id="m", body=envelope.to_json().encode()))


def test_routing_table_targets_existing_queues():
    names = {getattr(queues, n) for n in dir(queues) if n.isupper()}
    for targets in routing.HANDLER_QUEUES.values():
        assert set(targets) <= names
    assert routing.handler_queues("model_version.created") == (queues.RUN_GATES,)
    assert routing.handler_queues("registry.comment_created") == ()


def test_model_version_created_goes_to_gates_and_notifications_once(bus):
    for queue in (queues.RUN_GATES, queues.NOTIFICATIONS):
        drain(bus, queue)
    envelope = Envelope.wrap(ModelVersionCreated(model_name=f"m-{uuid.uuid4().hex[:6]}",
                                                 version="1"), source="/tests")
    deliver(envelope)
    deliver(envelope)  # redelivered: forwarded nothing more
    assert [e.id for e in drain(bus, queues.RUN_GATES)] == [envelope.id]
    [note] = drain(bus, queues.NOTIFICATIONS)
    assert note.data.about_event_id == envelope.id


def test_events_without_handlers_or_news_go_nowhere(bus):
    drain(bus, queues.NOTIFICATIONS)
    deliver(Envelope.wrap(ModelVersionTagSet(model_name="m", version="1", tags={"a": "b"}),
                          source="/tests"))
    assert drain(bus, queues.NOTIFICATIONS) == []


def test_gates_passed_goes_to_start_canary(bus):
    drain(bus, queues.START_CANARY)
    envelope = Envelope.wrap(GatesPassed(model_name="m", version="2", decision=Decision(
        actor="gatehouse", reason="ok")), source="/tests")
    deliver(envelope)
    assert [e.id for e in drain(bus, queues.START_CANARY)] == [envelope.id]


def test_unparseable_message_raises_for_the_poison_queue(storage_env):
    with pytest.raises(ValueError):  # pydantic's ValidationError: nothing is acknowledged
        router.route_registry_event(func.QueueMessage(id="m", body=b"not an envelope"))
