"""The default notification channel: one JSON line per notification in a local file, and the log.

Used when no Slack, Teams or PagerDuty is configured, or when a route names it. Delivery is
idempotent per event id: a redelivered notification is found in the file and not written twice.
A notification that would open or close a PagerDuty incident carries `"page": "trigger"` or
`"page": "resolve"`, so the outbox shows on-call's side of the story too (a rollback whose request
paged nobody, a person's by default, resolves no page of its own). Each line carries the links
Slack and Teams show (`links`: the MLflow pages, the signed rollback link).
"""

from __future__ import annotations

import fcntl
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from shared.channels.base import Delivery, PageIntent, page_intent, rollback_paged

log = logging.getLogger("gatehouse.outbox")


def links_of(delivery: Delivery) -> dict[str, str]:
    """The links the chat channels show: the note's and MLflow's, and Teams' Roll back button."""
    links = dict(delivery.links)
    if delivery.rollback_url and delivery.rollback is not None:
        links["roll back"] = delivery.rollback_url
    return links


class OutboxChannel:
    name = "outbox"
    updates_in_place = False
    resends_safely = True  # a line is written once per event id

    def __init__(self, path: Path):
        self.path = Path(path)

    def deliver(self, delivery: Delivery) -> dict:
        """Append the notification unless it is there already."""
        page = page_intent(delivery.note, delivery.policy)
        if page == "resolve" and not rollback_paged(delivery.note, delivery.policy):
            page = None
        return {"written": self.write(delivery.event_id, delivery.note, page,
                                      links=links_of(delivery))}

    def write(self, event_id: str, note, page: PageIntent | None = None,
              links: dict[str, str] | None = None) -> bool:
        """Append one notification line unless its event id is there already; True if written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({
            "delivered_at": datetime.now(UTC).isoformat(),
            "event_id": event_id,
            "channel": self.name,
            **({"page": page} if page else {}),
            **note.model_dump(mode="json", exclude_none=True),
            **({"links": links} if links else {}),
        })
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            if any(json.loads(existing).get("event_id") == event_id
                   for existing in handle if existing.strip()):
                return False
            handle.write(line + "\n")
            handle.flush()
        log.info("[%s]%s %s: %s", note.severity.upper(), f" page {page}" if page else "",
                 note.title, note.text)
        return True

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
