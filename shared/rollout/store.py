"""Rollouts on Azure Tables: one row per endpoint, its transition history beside it.

Partition = a digest of the endpoint name. Row `state` holds the EndpointRecord (JSON) and is
only ever replaced with the ETag it was read with; the transitions of a save are inserted in the
same entity-group transaction, so a decision and its history row land together or not at all,
and of two hosts that read the same state only one can save a decision on it.
"""

from __future__ import annotations

import json

from shared.foundation.state import ConcurrencyConflict, Row, StateTable, safe_row_key
from shared.rollout.machine import EndpointRecord, Transition

TABLE = "gatehouserollouts"
STATE_ROW = "state"
LINKS_PARTITION = "rollback-links"


def _partition(endpoint: str) -> str:
    return "ep" + safe_row_key(endpoint)[:40]


def _history_row(seq: int) -> str:
    return f"h{seq:010d}"


class RolloutTable(StateTable):
    """StateTable plus the two things the rollout needs: a conditional replace that inserts
    history rows in the same transaction, and a query across partitions."""

    def save(self, partition: str, row: str, properties: dict, etag: str | None,
             extra_rows: list[tuple[str, dict]]) -> str:
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError, UpdateMode

        entity = {"PartitionKey": partition, "RowKey": row, **properties}
        first: tuple[str, dict] | tuple[str, dict, dict[str, object]]
        if etag is None:
            first = ("create", entity)
        else:
            first = ("update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                        "match_condition": MatchConditions.IfNotModified})
        operations = [first] + [("create", {"PartitionKey": partition, "RowKey": key, **props})
                                for key, props in extra_rows]
        try:
            results = self._table.submit_transaction(operations)
        except TableTransactionError as exc:
            if exc.status_code in (404, 409, 412):
                raise ConcurrencyConflict(f"{partition}/{row} changed since it was read") from None
            raise
        return results[0]["etag"]

    def query(self, filter_text: str) -> list[dict]:
        return [dict(entity) for entity in self._table.query_entities(filter_text)]


class Loaded:
    """A record as read, with the ETag a save must match (None: the row does not exist)."""

    def __init__(self, record: EndpointRecord | None, etag: str | None):
        self.record, self.etag = record, etag

    def existing(self) -> EndpointRecord:
        """The record of an endpoint known to have one. Records are never deleted, so an
        endpoint that had a record has one on every later load; None here is a broken store."""
        if self.record is None:
            raise LookupError("the endpoint's rollout record is gone (records are never deleted)")
        return self.record


class RolloutStore:
    def __init__(self, table: RolloutTable):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> RolloutStore:
        return cls(RolloutTable(connection_string, TABLE))

    def load(self, endpoint: str) -> Loaded:
        row: Row | None = self.table.get(_partition(endpoint), STATE_ROW)
        if row is None:
            return Loaded(None, None)
        return Loaded(EndpointRecord.model_validate_json(row.properties["record"]), row.etag)

    def save(self, loaded: Loaded, record: EndpointRecord,
             transitions: tuple[Transition, ...] | list[Transition] = ()) -> Loaded:
        """Replace the record if nobody saved since `loaded` was read (else ConcurrencyConflict)."""
        properties = {"endpoint": record.endpoint, "model_name": record.model_name,
                      "record": record.model_dump_json()}
        history = [(_history_row(t.seq), {"endpoint": record.endpoint, "rollout_id": t.rollout_id,
                                          "seq": t.seq, "transition": t.model_dump_json()})
                   for t in transitions]
        etag = self.table.save(_partition(record.endpoint), STATE_ROW, properties, loaded.etag,
                               history)
        return Loaded(record, etag)

    def records(self) -> list[EndpointRecord]:
        rows = self.table.query(f"RowKey eq '{STATE_ROW}'")
        return sorted((EndpointRecord.model_validate_json(r["record"]) for r in rows),
                      key=lambda r: r.endpoint)

    def history(self, endpoint: str, rollout_id: str | None = None) -> list[Transition]:
        rows = self.table.query(f"PartitionKey eq '{_partition(endpoint)}'")
        transitions = [Transition.model_validate_json(r["transition"]) for r in rows
                       if r["RowKey"].startswith("h")]
        if rollout_id is not None:
            transitions = [t for t in transitions if t.rollout_id == rollout_id]
        return sorted(transitions, key=lambda t: t.seq)

    def used(self, key: str) -> bool:
        return self.table.get(LINKS_PARTITION, safe_row_key(key)) is not None

    def use_once(self, key: str, properties: dict) -> bool:
        """True the first time `key` is used, False ever after (conditional insert)."""
        try:
            self.table.insert(LINKS_PARTITION, safe_row_key(key), {
                k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                for k, v in properties.items()})
        except ConcurrencyConflict:
            return False
        return True
