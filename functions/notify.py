"""Consumes `notifications`: delivers each notification to the channels its route chooses.

Idempotent twice over: the whole event once (process_once, scope "notify"), and each channel once
(delivery records), so a message redelivered after one channel failed re-tries only that channel.
"""

from __future__ import annotations

from functools import lru_cache

import azure.functions as func

from shared.foundation.logs import event_log_context
from shared.foundation.queues import NOTIFICATIONS

bp = func.Blueprint()


def rollback_link_signer(connection_string: str, link_secret: str | None, public_url: str | None):
    """Signed one-click rollback links (shared/rollout/links.py) for the rollout of the version a
    notification is about; None when the app has no link secret or no public address."""
    if not link_secret or not public_url:
        return None
    import time

    from shared.rollout import links
    from shared.rollout.store import RolloutStore

    store = RolloutStore.connect(connection_string)

    def sign(target) -> str | None:
        record = store.load(target.endpoint).record
        rollout = next((r for r in (record.rollouts() if record else [])
                        if r.model_name == target.model_name and r.challenger == target.version),
                       None)
        if rollout is None:
            return None
        token = links.make_token(link_secret, target.endpoint, rollout.id, now=time.time())
        return links.rollback_url(public_url, token)
    return sign


@lru_cache(maxsize=4)
def _dispatcher(settings, connection_string: str, outbox_path, link_secret: str | None,
                public_url: str | None):
    from shared.channels.factory import build_dispatcher

    return build_dispatcher(settings, connection_string, outbox_path,
                            rollback_link=rollback_link_signer(connection_string, link_secret,
                                                               public_url))


def deliver_notification(body: bytes | str) -> dict | None:
    from shared.foundation import runtime
    from shared.channels.factory import ChannelSettings
    from shared.events import Envelope, NotificationRequested
    from shared.foundation.handling import process_once

    # A message that does not parse raises: after maxDequeueCount tries it lands on the poison
    # queue, intact, instead of being dropped.
    envelope = Envelope.from_json_expecting(body, NotificationRequested)
    settings = runtime.settings()
    dispatcher = _dispatcher(ChannelSettings.from_settings(settings), runtime.storage_connection(),
                             settings.outbox_path, settings.rollback_link_secret,
                             settings.public_url)
    return process_once(runtime.idempotency(), "notify", envelope.id,
                        lambda: dispatcher.deliver(envelope))


@bp.queue_trigger(arg_name="msg", queue_name=NOTIFICATIONS, connection="AzureWebJobsStorage")
@event_log_context
def notify(msg: func.QueueMessage) -> None:
    deliver_notification(msg.get_body())
