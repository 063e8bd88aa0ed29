"""A small state store on Azure Tables with ETag optimistic concurrency.

Rows are plain dicts of properties under (partition, row). Writers pass the ETag they read; a write
against a row that changed since raises `ConcurrencyConflict` instead of silently overwriting it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


class ConcurrencyConflict(Exception):
    """The row exists already (insert) or changed since it was read (replace/delete)."""


@dataclass(frozen=True)
class Row:
    properties: dict
    etag: str


def safe_row_key(key: str) -> str:
    # Table keys forbid '/', '\\', '#', '?' and control characters: use a digest of the key.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class StateTable:
    def __init__(self, connection_string: str, table: str):
        from shared.platform.storage import table_service

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

    def insert(self, partition: str, row: str, properties: dict) -> str:
        from azure.core.exceptions import ResourceExistsError

        try:
            metadata = self._table.create_entity(
                {"PartitionKey": partition, "RowKey": row, **properties})
        except ResourceExistsError:
            raise ConcurrencyConflict(f"{partition}/{row} exists already") from None
        return metadata["etag"]

    def replace(self, partition: str, row: str, properties: dict, etag: str) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            metadata = self._table.update_entity(
                {"PartitionKey": partition, "RowKey": row, **properties},
                mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            raise ConcurrencyConflict(f"{partition}/{row} changed since it was read") from None
        return metadata["etag"]

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
