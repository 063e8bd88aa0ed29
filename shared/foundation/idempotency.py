"""Idempotency records on the state table, after AWS Lambda Powertools' idempotency utility.

One record per (scope, key): IN_PROGRESS while a handler works on it (with a lease, so a crashed
holder does not block the key forever), COMPLETED once done (until it expires). A record is taken
with a conditional insert; a stale one is taken over with an ETag-conditioned replace, so two
workers racing for the same key cannot both win. The lease is the app's functionTimeout (runtime
builds the store with it), and a holder that works longer renews it (`renew`, which
`handling.process_once` calls from a heartbeat).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared.foundation.state import ConcurrencyConflict, Row, StateTable, Table, safe_row_key

Result = dict[str, Any] | None
"""What a unit of work returned, kept with its record (JSON)."""

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
TABLE = "gatehouseidempotency"
DEFAULT_LEASE_SECONDS = 300.0
KEY_SHOWN_CHARS = 1000  # the row key is a digest of the whole key; the property is for people


class Verdict(str, Enum):
    TAKE = "take"            # no live record: this caller does the work
    DUPLICATE = "duplicate"  # done before: skip, reuse the stored result
    BUSY = "busy"            # someone else holds a live lease: try again later


def judge_record(record: dict[str, Any] | None, now: float) -> Verdict:
    """What an existing record means for a new caller (pure)."""
    if record is None:
        return Verdict.TAKE
    if record.get("status") == COMPLETED:
        return Verdict.DUPLICATE if float(record.get("expires_at", 0)) > now else Verdict.TAKE
    if float(record.get("lease_expires_at", 0)) > now:
        return Verdict.BUSY
    return Verdict.TAKE


class AlreadyCompleted(Exception):
    def __init__(self, result: Result):
        super().__init__("already completed")
        self.result = result


class AlreadyInProgress(Exception):
    """Another worker holds the key; retry after `retry_after` seconds."""

    def __init__(self, retry_after: float):
        super().__init__(f"in progress elsewhere; retry in {retry_after:.0f}s")
        self.retry_after = max(retry_after, 1.0)


@dataclass
class Claim:
    scope: str
    key: str
    etag: str

    @property
    def row(self) -> str:
        return safe_row_key(self.key)


class IdempotencyStore:
    def __init__(self, table: Table, lease_seconds: float = DEFAULT_LEASE_SECONDS):
        self.table = table
        self.lease_seconds = lease_seconds

    @classmethod
    def connect(cls, connection_string: str,
                lease_seconds: float = DEFAULT_LEASE_SECONDS) -> IdempotencyStore:
        return cls(StateTable(connection_string, TABLE), lease_seconds)

    def claim(self, scope: str, key: str, now: float | None = None) -> Claim:
        """Take the key, or raise AlreadyCompleted / AlreadyInProgress."""
        now = time.time() if now is None else now
        row = safe_row_key(key)
        fresh = {"key": key[:KEY_SHOWN_CHARS], "status": IN_PROGRESS,
                 "lease_expires_at": now + self.lease_seconds}
        for _ in range(3):
            try:
                return Claim(scope, key, self.table.insert(scope, row, fresh))
            except ConcurrencyConflict:
                pass
            existing: Row | None = self.table.get(scope, row)
            if existing is None:
                continue  # released between our insert and read: try the insert again
            verdict = judge_record(existing.properties, now)
            if verdict is Verdict.DUPLICATE:
                stored = existing.properties.get("result")
                raise AlreadyCompleted(json.loads(stored) if stored else None)
            if verdict is Verdict.BUSY:
                raise AlreadyInProgress(float(existing.properties["lease_expires_at"]) - now)
            try:
                return Claim(scope, key, self.table.replace(scope, row, fresh, existing.etag))
            except ConcurrencyConflict:
                raise AlreadyInProgress(self.lease_seconds) from None
        raise AlreadyInProgress(1.0)

    def renew(self, claim: Claim, now: float | None = None) -> bool:
        """Extend the holder's lease by `lease_seconds` from now; False (and nothing written)
        when the record is no longer this claim's: completed, released or taken over."""
        now = time.time() if now is None else now
        fresh = {"key": claim.key, "status": IN_PROGRESS,
                 "lease_expires_at": now + self.lease_seconds}
        try:
            claim.etag = self.table.replace(claim.scope, claim.row, fresh, claim.etag)
        except ConcurrencyConflict:
            return False
        return True

    def complete(self, claim: Claim, result: Result = None,
                 ttl_seconds: float = 7 * 24 * 3600, now: float | None = None) -> None:
        now = time.time() if now is None else now
        done = {"key": claim.key, "status": COMPLETED, "expires_at": now + ttl_seconds,
                "result": json.dumps(result) if result is not None else ""}
        claim.etag = self.table.replace(claim.scope, claim.row, done, claim.etag)

    def release(self, claim: Claim) -> None:
        """Give the key back after a failure, so a retry can do the work."""
        try:
            self.table.delete(claim.scope, claim.row, claim.etag)
        except ConcurrencyConflict:
            pass  # taken over after our lease ran out: it is someone else's now

    def status(self, scope: str, key: str) -> str | None:
        row = self.table.get(scope, safe_row_key(key))
        return row.properties.get("status") if row else None
