"""Late labels: the true outcome of a served request, arriving after the fact, keyed by request id.

A request that scored one row is labelled by its request id (the `X-Request-Id` it was served
with, or the inference table's client/databricks request id); the rows of a batch request by
`<request id>/<row index>` (0-based), see `row_key`. The monitor joins labels to the rows of a
window by these keys to compute calibration and performance on what has been labelled so far.

Stored on Azure Tables: partition = the endpoint, row = a digest of the key; last write wins.
Beside them, partition `labelled` holds one row per endpoint that was ever given labels, so the
monitor asks for labels only where some exist: one query for the endpoints that have labels, and
per endpoint one query for the labels stored since its earliest unjudged window began (a label
always arrives after its request was served, so nothing older can belong to that window).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

from shared.foundation.state import StateTable, safe_row_key

TABLE = "gatehouselabels"
LABELLED = "labelled"
CLOCK_SKEW_SECONDS = 300.0  # labels stamped by our clock, requests by the server's
QUERY_CHUNK = 40     # keys per filter: keeps the $filter well under the service's length limit
BATCH = 100          # entities per transaction (the service's maximum)


def row_key(request_id: str, index: int, rows_in_request: int) -> str:
    return request_id if rows_in_request == 1 else f"{request_id}/{index}"


def label_value(value: object) -> float:
    """A label as a number: 0/1 (or true/false) for classifiers, any finite number otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return 1.0 if value.strip().lower() == "true" else 0.0
    if isinstance(value, (int, float, str)):
        try:
            number = float(value)
        except (ValueError, OverflowError):  # not a number; an integer beyond a float
            number = math.nan
        if math.isfinite(number):
            return number
    raise ValueError(f"label {str(value)[:80]!r} is not a number or a boolean")


def _partition(endpoint: str) -> str:
    return "ep" + safe_row_key(endpoint)[:40]


class LabelTable(StateTable):
    def upsert_many(self, partition: str, rows: list[tuple[str, dict]]) -> None:
        from azure.data.tables import UpdateMode

        for start in range(0, len(rows), BATCH):
            operations = [("upsert", {"PartitionKey": partition, "RowKey": row, **properties},
                           {"mode": UpdateMode.REPLACE})
                          for row, properties in rows[start:start + BATCH]]
            self._table.submit_transaction(operations)

    def get_many(self, partition: str, rows: list[str]) -> list[dict]:
        found: list[dict] = []
        for start in range(0, len(rows), QUERY_CHUNK):
            chunk = rows[start:start + QUERY_CHUNK]
            keys = " or ".join(f"RowKey eq '{row}'" for row in chunk)
            found.extend(dict(e) for e in self._table.query_entities(
                f"PartitionKey eq '{partition}' and ({keys})"))
        return found

    def labelled_since(self, partition: str, since: float) -> list[dict]:
        return [dict(e) for e in self._table.query_entities(
            f"PartitionKey eq '{partition}' and labelled_at ge {float(since)!r}",
            select=["key", "label"])]


class LabelStore:
    def __init__(self, table: LabelTable):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> LabelStore:
        return cls(LabelTable(connection_string, TABLE))

    def put(self, endpoint: str, labels: Mapping[str, object], now: float | None = None) -> int:
        at = float(time.time() if now is None else now)
        # The last label given for a key wins, also within one call.
        rows = {safe_row_key(key): {"key": key, "label": label_value(value), "labelled_at": at}
                for key, value in labels.items()}
        self.table.upsert_many(LABELLED, [(safe_row_key(endpoint), {"endpoint": endpoint})])
        self.table.upsert_many(_partition(endpoint), list(rows.items()))
        return len(rows)

    def labelled_endpoints(self) -> set[str]:
        """The endpoints that were ever given labels (one query)."""
        return {row.properties["endpoint"] for row in self.table.rows(LABELLED)}

    def since(self, endpoint: str, since: float) -> dict[str, float]:
        """The endpoint's labels stored since `since` (one query), by key."""
        entities = self.table.labelled_since(_partition(endpoint), since - CLOCK_SKEW_SECONDS)
        return {entity["key"]: float(entity["label"]) for entity in entities}

    def get(self, endpoint: str, keys: Iterable[str]) -> dict[str, float]:
        wanted = {safe_row_key(key): key for key in keys}
        entities = self.table.get_many(_partition(endpoint), sorted(wanted))
        return {entity["key"]: float(entity["label"]) for entity in entities}
