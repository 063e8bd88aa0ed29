"""A small state store on Azure Tables with ETag optimistic concurrency, and its in-memory twin.

Rows are plain dicts of properties under (partition, row). Writers pass the ETag they read; a write
against a row that changed since raises `ConcurrencyConflict` instead of silently overwriting it.
`modify` is the one read-modify-write loop built on that: every store that updates a row in place
goes through it. (Idempotency claims and the rollout's saves are conditional writes of their own;
the monitor's and the poller's saves are first-writer-wins, with no retry.)

The contract both tables keep is tests/foundation/test_state_contract.py.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

Properties = dict[str, Any]
Update = Callable[[Properties | None], Properties | None]
"""Given a row's properties (None: no row yet), the properties to save; None saves nothing."""


class ConcurrencyConflict(Exception):
    """The row exists already (insert), or changed or vanished since it was read (replace), or
    changed since it was read (delete)."""


@dataclass(frozen=True)
class Row:
    properties: Properties
    etag: str


def safe_row_key(key: str) -> str:
    # Table keys forbid '/', '\\', '#', '?' and control characters: use a digest of the key.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class Table(ABC):
    """The operations every state table offers; `modify` is written once on top of them."""

    @abstractmethod
    def get(self, partition: str, row: str) -> Row | None: ...

    @abstractmethod
    def insert(self, partition: str, row: str, properties: Properties) -> str: ...

    @abstractmethod
    def replace(self, partition: str, row: str, properties: Properties, etag: str) -> str: ...

    @abstractmethod
    def delete(self, partition: str, row: str, etag: str) -> None:
        """Delete the row if it still has this ETag; a row that is gone already is no conflict
        (Azure Tables' delete_entity ignores a missing entity)."""

    @abstractmethod
    def rows(self, partition: str) -> list[Row]: ...

    def modify(self, partition: str, row: str, update: Update, attempts: int = 5,
               jitter: float = 0.0) -> Row | None:
        """Apply `update` to the row and save the result with its ETag, re-reading and trying
        again (up to `attempts` times, after a random pause of up to `jitter` seconds) when
        another writer got there first; ConcurrencyConflict when every attempt lost.

        Returns the row as saved, or as it stands when `update` returned None (None: no row).
        `update` may run more than once, so it must be a pure function of what it is given.
        """
        for _ in range(attempts):
            current = self.get(partition, row)
            wanted = update(dict(current.properties) if current else None)
            if wanted is None:
                return current
            try:
                if current is None:
                    etag = self.insert(partition, row, wanted)
                else:
                    etag = self.replace(partition, row, wanted, current.etag)
            except ConcurrencyConflict:
                if jitter:
                    time.sleep(random.uniform(0.0, jitter))
                continue
            return Row(as_stored(wanted), etag)
        raise ConcurrencyConflict(f"{partition}/{row} kept changing under {attempts} attempts")


# The Tables SDK retries a failed connection only for methods it deems idempotent, so an insert
# (POST) sent on a keep-alive connection the server had just closed failed outright. Every write
# here is conditional (an insert conflicts with an existing row, a replace or delete carries the
# ETag), so retrying it is safe: a retry that meets its own first attempt ends as a conflict, and
# every caller already resolves conflicts by reading again.
RETRIED_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE", "POST", "PATCH"})


class StateTable(Table):
    """A table on Azure Table storage (Azurite locally)."""

    def __init__(self, connection_string: str, table: str):
        from shared.foundation.storage import table_service

        service = table_service(connection_string)
        self._table = service.create_table_if_not_exists(table)

    def get(self, partition: str, row: str) -> Row | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None
        properties = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
        return Row(properties, entity.metadata["etag"])

    def insert(self, partition: str, row: str, properties: Properties) -> str:
        from azure.core.exceptions import ResourceExistsError

        try:
            metadata = self._table.create_entity(
                {"PartitionKey": partition, "RowKey": row, **as_stored(properties)},
                retry_on_methods=RETRIED_METHODS)
        except ResourceExistsError:
            raise ConcurrencyConflict(f"{partition}/{row} exists already") from None
        return str(metadata["etag"])

    def replace(self, partition: str, row: str, properties: Properties, etag: str) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            metadata = self._table.update_entity(
                {"PartitionKey": partition, "RowKey": row, **as_stored(properties)},
                mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ConcurrencyConflict(f"{partition}/{row} changed since it was read") from None
        return str(metadata["etag"])

    def delete(self, partition: str, row: str, etag: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        try:
            self._table.delete_entity(partition, row, etag=etag,
                                      match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ConcurrencyConflict(f"{partition}/{row} changed since it was read") from None

    def rows(self, partition: str) -> list[Row]:
        safe = partition.replace("'", "''")
        return [Row({k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")},
                    entity.metadata["etag"])
                for entity in self._table.query_entities(f"PartitionKey eq '{safe}'")]


INT32 = range(-2**31, 2**31)
MAX_PROPERTY_BYTES = 64 * 1024  # a string counts in UTF-16, as Azure Tables stores it
STORABLE_TYPES = (str, int, float, bool, bytes, datetime, UUID)


def as_stored(properties: Properties) -> Properties:
    """The properties as Azure Tables keeps them: a None value is left out, and a value it
    cannot store (a dict, a list, an int beyond Int32) raises TypeError as its SDK does; a
    value over 64 KB raises ValueError, as the service refuses it."""
    stored = {}
    for name, value in properties.items():
        if value is None:
            continue
        if not isinstance(value, STORABLE_TYPES):
            raise TypeError(f"property {name}: a {type(value).__name__} cannot be stored")
        if isinstance(value, int) and not isinstance(value, bool) and value not in INT32:
            raise TypeError(f"property {name}: {value} is too large for an Int32 property")
        size = len(value.encode("utf-16-le")) if isinstance(value, str) else \
            len(value) if isinstance(value, bytes) else 0
        if size > MAX_PROPERTY_BYTES:
            raise ValueError(f"property {name}: {size} bytes is over the 64 KB a property holds")
        stored[name] = value
    return stored


class MemoryTable(Table):
    """The same table semantics (ETags, conflicts) in this process's memory: for unit tests and
    anything that needs a state table without storage."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], Row] = {}
        self._etags = itertools.count(1)
        self._lock = threading.Lock()

    def _etag(self) -> str:
        return f'W/"{next(self._etags)}"'

    def get(self, partition: str, row: str) -> Row | None:
        with self._lock:
            found = self._rows.get((partition, row))
            return Row(dict(found.properties), found.etag) if found else None

    def insert(self, partition: str, row: str, properties: Properties) -> str:
        with self._lock:
            if (partition, row) in self._rows:
                raise ConcurrencyConflict(f"{partition}/{row} exists already")
            saved = self._rows[(partition, row)] = Row(as_stored(properties), self._etag())
            return saved.etag

    def replace(self, partition: str, row: str, properties: Properties, etag: str) -> str:
        with self._lock:
            self._check(partition, row, etag)
            saved = self._rows[(partition, row)] = Row(as_stored(properties), self._etag())
            return saved.etag

    def delete(self, partition: str, row: str, etag: str) -> None:
        with self._lock:
            if (partition, row) not in self._rows:
                return
            self._check(partition, row, etag)
            del self._rows[(partition, row)]

    def rows(self, partition: str) -> list[Row]:
        with self._lock:
            return [Row(dict(r.properties), r.etag)
                    for (p, _), r in sorted(self._rows.items()) if p == partition]

    def _check(self, partition: str, row: str, etag: str) -> None:
        found = self._rows.get((partition, row))
        if found is None or found.etag != etag:
            raise ConcurrencyConflict(f"{partition}/{row} changed since it was read")
