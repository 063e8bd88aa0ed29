"""Which alerts are open: one row per alert fingerprint on the state table.

A firing alert opens its row; the resolved alert with the same fingerprint closes it. The row
keeps `started` (when the sender says the alert started), so a firing notification that arrives
after its own resolution (same fingerprint and start) is recognised as stale, not reopened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared.foundation.state import StateTable, Table, safe_row_key

TABLE = "gatehousealerts"
PARTITION = "alerts"
OPEN, CLOSED = "open", "closed"


@dataclass(frozen=True)
class AlertRecord:
    fingerprint: str
    state: str
    started: str
    event_id: str
    etag: str | None = None

    @property
    def is_open(self) -> bool:
        return self.state == OPEN


class OpenAlerts:
    def __init__(self, table: Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> OpenAlerts:
        return cls(StateTable(connection_string, TABLE))

    def get(self, fingerprint: str) -> AlertRecord | None:
        row = self.table.get(PARTITION, safe_row_key(fingerprint))
        if row is None:
            return None
        p = row.properties
        return AlertRecord(p["fingerprint"], p["state"], p.get("started", ""),
                           p.get("event_id", ""), row.etag)

    def put(self, fingerprint: str, state: str, started: str, event_id: str,
            details: dict | None = None) -> None:
        """Set the alert's state, whatever it was (last writer wins: both writers act on the
        same sender's notifications, which the sender orders)."""
        properties = {"fingerprint": fingerprint, "state": state, "started": started,
                      "event_id": event_id, "updated_at": time.time(),
                      **{k: v for k, v in (details or {}).items() if v is not None}}
        self.table.modify(PARTITION, safe_row_key(fingerprint), lambda _: properties)

    def open_alerts(self) -> list[AlertRecord]:
        return [AlertRecord(r.properties["fingerprint"], r.properties["state"],
                            r.properties.get("started", ""), r.properties.get("event_id", ""),
                            r.etag)
                for r in self.table.rows(PARTITION) if r.properties.get("state") == OPEN]
