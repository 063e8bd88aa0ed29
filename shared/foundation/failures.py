"""Why a queue message failed: one record per (queue, message), kept by the handler side.

On Azure the Functions host moves a message that failed `maxDequeueCount` times to
`<queue>-poison` by itself, and says nothing about why. So every failed attempt is recorded here
(`handling.consume` does it before re-raising): the handler, how many attempts failed, the last
error and when. The row key is the SHA-256 of the message body as the queue carried it (decoded
from host.json's messageEncoding), which is also what the poison queue keeps, so
`gatehouse poison list` finds the reason of each poison message.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from shared.foundation.state import Properties, StateTable, Table

TABLE = "gatehousefailures"
ERROR_CHARS = 4000  # a table property holds 64 KB; the gist of an error is shorter


def message_key(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def event_id_of(body: bytes) -> str | None:
    """The envelope id a message body carries, when it is an envelope at all."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    found = document.get("id") if isinstance(document, dict) else None
    return found if isinstance(found, str) else None


def describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"


def failed_again(previous: Properties | None, handler: str, error: str, event_id: str | None,
                 when: datetime) -> Properties:
    """The record after one more failed attempt (pure)."""
    previous = previous or {}
    record: Properties = {
        "handler": handler,
        "attempts": int(previous.get("attempts", 0)) + 1,
        "last_error": error,
        "last_failed_at": when.isoformat(),
        "first_failed_at": previous.get("first_failed_at", when.isoformat()),
    }
    if event_id or previous.get("event_id"):
        record["event_id"] = event_id or previous["event_id"]
    return record


class FailureLog:
    def __init__(self, table: Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> FailureLog:
        return cls(StateTable(connection_string, TABLE))

    def record(self, queue: str, handler: str, body: bytes, error: BaseException,
               now: datetime | None = None) -> dict[str, Any]:
        when = now or datetime.now(UTC)
        event_id = event_id_of(body)
        saved = self.table.modify(queue, message_key(body), lambda previous: failed_again(
            previous, handler, describe(error), event_id, when))
        return dict(saved.properties) if saved else {}

    def find(self, queue: str, body: bytes) -> dict[str, Any] | None:
        row = self.table.get(queue, message_key(body))
        return dict(row.properties) if row else None
