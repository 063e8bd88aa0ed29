"""Consumes `notifications`: delivers each notification to the configured channels, once."""

from __future__ import annotations

import azure.functions as func

from shared.queues import NOTIFICATIONS

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=NOTIFICATIONS, connection="AzureWebJobsStorage")
def notify(msg: func.QueueMessage) -> None:
    from shared import runtime
    from shared.channels.outbox import OutboxChannel
    from shared.events import Envelope, NotificationRequested
    from shared.handling import process_once

    envelope = Envelope.from_json(msg.get_body())
    if not isinstance(envelope.data, NotificationRequested):
        raise ValueError(f"{envelope.id} is a {envelope.type}, not a notification request")
    channel = OutboxChannel(runtime.settings().outbox_path)
    process_once(runtime.idempotency(), "notify", envelope.id,
                 lambda: {channel.name: channel.deliver(envelope)})
