"""What every channel shares: the Delivery it is handed, the ChannelError it raises, the Channel
protocol it implements, and the pure facts about a notification that more than one of them reads
(its event kind, whether it opens or closes a page, what a Roll back would target).

Channels and the dispatcher depend on this module; it depends on neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from shared.channels.messages import rollback_request_severity
from shared.channels.policy import PAGING_EVENTS, SEVERITY_RANK, NotificationPolicy
from shared.events import TYPE_PREFIX, NotificationRequested

PageIntent = Literal["trigger", "resolve"]


def event_kind(note: NotificationRequested) -> str:
    kind = note.about_event_type
    return kind[len(TYPE_PREFIX):] if kind.startswith(TYPE_PREFIX) else kind


def page_intent(note: NotificationRequested, policy: NotificationPolicy) -> PageIntent | None:
    """Whether the note opens a page, closes one, or has nothing to do with paging."""
    kind = event_kind(note)
    if kind not in PAGING_EVENTS:
        return None
    if kind == "rollout.rollback_completed" or note.facts.get("alert_status") == "resolved":
        return "resolve"
    if SEVERITY_RANK[note.severity] >= SEVERITY_RANK[policy.page_min_severity]:
        return "trigger"
    return None


def rollback_paged(note: NotificationRequested, policy: NotificationPolicy) -> bool:
    """For a completed rollback, whether its request opened a page (True for any other note).
    A rollback completes with the requester as its actor (`decided by`); one completed by
    Gatehouse after the grace period has Gatehouse's name and counts as paged (resolving an
    incident that was never opened sends nothing: the channel resolves only open ones)."""
    if event_kind(note) != "rollout.rollback_completed":
        return True
    actor = note.facts.get("decided by") or "gatehouse"
    severity = rollback_request_severity(actor)
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[policy.page_min_severity]


@dataclass(frozen=True)
class RollbackTarget:
    model_name: str
    version: str
    endpoint: str
    registry: str = "mlflow"


@dataclass(frozen=True)
class Repeat:
    original_event_id: str
    count: int                      # times seen within the window, the original included
    refs: dict[str, dict]           # where each channel put the original


@dataclass(frozen=True)
class Delivery:
    event_id: str
    note: NotificationRequested
    policy: NotificationPolicy
    links: dict[str, str] = field(default_factory=dict)
    rollback: RollbackTarget | None = None
    rollback_url: str | None = None
    repeat: Repeat | None = None
    now: float = 0.0

    @property
    def mlflow_url(self) -> str | None:
        return self.links.get("report") or self.links.get("model")


class ChannelError(Exception):
    """A channel could not deliver. The message must be safe to record (no secrets)."""

    def __init__(self, message: str, transient: bool = True):
        super().__init__(message)
        self.transient = transient


class Channel(Protocol):
    name: str
    updates_in_place: bool  # a repeat updates what the original posted (else it is collapsed)
    # Sending the same delivery again cannot make a second copy: the target deduplicates it
    # (PagerDuty's dedup_key, the outbox file's event id). Channels without it are sent at most
    # once per delivery (see shared/channels/dispatch.py).
    resends_safely: bool

    def deliver(self, delivery: Delivery) -> dict:
        """Deliver once; return where it went (recorded, and handed back for repeats)."""
