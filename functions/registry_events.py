"""Consumes `registry-events`: decides what to do about each registry change, exactly once."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.queues import NOTIFICATIONS, REGISTRY_EVENTS

bp = func.Blueprint()
log = logging.getLogger("gatehouse.registry_events")


@bp.queue_trigger(arg_name="msg", queue_name=REGISTRY_EVENTS, connection="AzureWebJobsStorage")
def route_registry_event(msg: func.QueueMessage) -> None:
    from shared import decisions, runtime
    from shared.events import Envelope
    from shared.handling import process_once

    # A message that does not parse raises: after maxDequeueCount tries it lands on the poison
    # queue, intact, instead of being dropped.
    envelope = Envelope.from_json(msg.get_body())

    def work() -> dict:
        notification = decisions.notification_for(envelope)
        if notification is None:
            return {"notified": None}
        derived = envelope.derived(notification, source=decisions.NOTIFY_SOURCE)
        runtime.bus().send(NOTIFICATIONS, derived)
        return {"notified": derived.id}

    result = process_once(runtime.idempotency(), "route-registry-event", envelope.id, work)
    log.info("registry event %s (%s) handled: %s", envelope.id, envelope.type, result)
