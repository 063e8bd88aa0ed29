"""Consumes `notifications`: delivers each notification to the channels its route chooses.

Idempotent twice over: the whole event once (process_once, scope "notify"), and each channel once
(delivery records), so a message redelivered after one channel failed re-tries only that channel.
"""

from __future__ import annotations

import azure.functions as func

from shared.foundation.queues import NOTIFICATIONS

bp = func.Blueprint()


def deliver_notification(body: bytes | str) -> dict | None:
    from shared.channels.factory import dispatcher_from_runtime
    from shared.events import NotificationRequested
    from shared.foundation.handling import process_event

    # A message that does not parse raises: after maxDequeueCount tries it lands on the poison
    # queue, intact, instead of being dropped.
    return process_event(body, NotificationRequested, "notify",
                         lambda envelope, _: dispatcher_from_runtime().deliver(envelope),
                         queue=NOTIFICATIONS)


@bp.queue_trigger(arg_name="msg", queue_name=NOTIFICATIONS, connection="AzureWebJobsStorage")
def notify(msg: func.QueueMessage) -> None:
    deliver_notification(msg.get_body())
