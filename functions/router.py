"""The router: forwards every event to the handlers that act on it, and asks for notifications.

Consumes both REGISTRY_EVENTS (from the webhook receivers) and GATEHOUSE_EVENTS (published by
handlers). The router is where a repeated webhook delivery stops: the receiver enqueues every
delivery it accepts, retries included, under an id derived from the delivery, and the router
forwards each id once (remembered for GATEHOUSE_DELIVERY_TTL_SECONDS). Forwarded envelopes keep
their id, so each handler drops redeliveries on its own.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.queues import GATEHOUSE_EVENTS, REGISTRY_EVENTS

bp = func.Blueprint()
log = logging.getLogger("gatehouse.router")


def route(body: bytes, queue: str) -> dict | None:
    from shared import routing
    from shared.events import Envelope
    from shared.foundation import runtime
    from shared.foundation.handling import consume, process_once
    from shared.foundation.logs import log_context

    def forward(content: bytes) -> dict | None:
        # A message that does not parse raises: after maxDequeueCount tries it lands on the
        # poison queue, intact, instead of being dropped.
        envelope = Envelope.from_json(content)
        with log_context(envelope):
            result = process_once(runtime.idempotency(), "router", envelope.id,
                                  lambda: routing.forward(envelope, runtime.bus()),
                                  ttl_seconds=runtime.settings().delivery_ttl_seconds)
            log.info("routed %s (%s): %s", envelope.id, envelope.type, result)
        return result

    return consume(queue, "router", body, forward)


@bp.queue_trigger(arg_name="msg", queue_name=REGISTRY_EVENTS, connection="AzureWebJobsStorage")
def route_registry_event(msg: func.QueueMessage) -> None:
    route(msg.get_body(), REGISTRY_EVENTS)


@bp.queue_trigger(arg_name="msg", queue_name=GATEHOUSE_EVENTS, connection="AzureWebJobsStorage")
def route_gatehouse_event(msg: func.QueueMessage) -> None:
    route(msg.get_body(), GATEHOUSE_EVENTS)
