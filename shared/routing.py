"""Where each event goes: the handler queues that act on its kind, and a notification when it is
worth one. Storage queues have no topics, so the router forwards every event with `forward`."""

from __future__ import annotations

from typing import Protocol

from shared.channels.messages import NOTIFY_SOURCE, notification_for
from shared.events import Envelope
from shared.foundation import queues
from shared.foundation.failpoints import failpoint

HANDLER_QUEUES: dict[str, tuple[str, ...]] = {
    "model_version.created": (queues.RUN_GATES,),
    "model_version_tag.set": (queues.RUN_GATES,),  # a `gatehouse.rerun` tag asks for a re-run
    "gates.passed": (queues.START_CANARY,),
    "rollout.rollback_requested": (queues.OPEN_ROLLBACK,),
    "monitoring.alert": (queues.TRIGGER_RETRAINING,),
}


class Sender(Protocol):
    def send(self, queue: str, envelope: Envelope) -> str: ...


def handler_queues(kind: str) -> tuple[str, ...]:
    return HANDLER_QUEUES.get(kind, ())


def forward(envelope: Envelope, bus: Sender) -> dict[str, list[str]]:
    """Send the event to each handler queue that acts on it, and its notification, if any, to
    the notifications queue. Forwarded envelopes keep their id, and the notification's id derives
    from it, so forwarding again after a crash sends the same ids and each handler drops repeats."""
    targets = list(handler_queues(envelope.data.kind))
    for queue in targets:
        bus.send(queue, envelope)
        failpoint("router.forwarded")
    notification = notification_for(envelope)
    if notification is not None:
        bus.send(queues.NOTIFICATIONS, envelope.derived(notification, source=NOTIFY_SOURCE))
        failpoint("router.notification_requested")
        targets.append(queues.NOTIFICATIONS)
    return {"forwarded_to": targets}
