"""The embedded server's payload log: every request and response, in a local SQLite file.

Written by the embedded serving endpoint (one row per request), read by the rollout (health per
version, payloads to replay) and by monitoring:

    log = PayloadLog(path)
    for record in log.records(endpoint="fraud", since=time.time() - 3600):
        record.inputs, record.outputs, record.version, record.latency_ms, record.status
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.serving.base import HealthReport, PayloadRecord, VersionHealth

SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    endpoint TEXT NOT NULL,
    request_id TEXT NOT NULL,
    model_name TEXT,
    version TEXT,
    inputs TEXT NOT NULL,
    outputs TEXT,
    latency_ms REAL NOT NULL,
    status INTEGER NOT NULL,
    error TEXT,
    shadow INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS payloads_by_endpoint_time ON payloads (endpoint, ts);
"""


_COLUMNS = ("ts", "endpoint", "request_id", "model_name", "version", "inputs", "outputs",
            "latency_ms", "status", "error", "shadow")


class PayloadLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        with self._connect() as db:
            db.executescript(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(payloads)")}
            if "shadow" not in columns:  # a log written before the shadow step existed
                db.execute("ALTER TABLE payloads ADD COLUMN shadow INTEGER NOT NULL DEFAULT 0")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
            db.commit()
        finally:
            db.close()

    def append(self, record: PayloadRecord) -> None:
        """One row per request, on one long-lived writer connection: opening a connection per
        row cost more than scoring the request."""
        with self._lock:
            if self._writer is None:
                self._writer = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._writer.execute("PRAGMA journal_mode=WAL")
                # With WAL, NORMAL skips the fsync per commit and still survives a crash of the
                # process; only a power cut can lose the last rows.
                self._writer.execute("PRAGMA synchronous=NORMAL")
            with self._writer:  # commits, or rolls back on error
                self._writer.execute(f"INSERT INTO payloads ({', '.join(_COLUMNS)}) "
                                     f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                                     tuple(getattr(record, c) for c in _COLUMNS))

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def records(self, endpoint: str | None = None, since: float | None = None,
                until: float | None = None, version: str | None = None,
                ok_only: bool = False, limit: int | None = None,
                newest_first: bool = False, shadow: bool | None = False) -> list[PayloadRecord]:
        """Served requests (`shadow` False, the default: what callers were answered), the
        shadow version's answers to mirrored ones (True), or both (None)."""
        clauses, args = [], []
        for column, op, value in (("endpoint", "=", endpoint), ("ts", ">=", since),
                                  ("ts", "<", until), ("version", "=", version)):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        if ok_only:
            clauses.append("status BETWEEN 200 AND 299")
        if shadow is not None:
            clauses.append("shadow = ?")
            args.append(int(shadow))
        sql = f"SELECT {', '.join(_COLUMNS)} FROM payloads"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += f" ORDER BY id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._connect() as db:
            rows = db.execute(sql, args).fetchall()
        return [PayloadRecord(**{**dict(zip(_COLUMNS, row, strict=True)),
                                 "shadow": bool(row[-1])}) for row in rows]

    def endpoints(self, since: float, until: float) -> set[str]:
        """The endpoints that served a request in [since, until)."""
        with self._connect() as db:
            rows = db.execute("SELECT DISTINCT endpoint FROM payloads WHERE ts >= ? AND ts < ?",
                              (since, until)).fetchall()
        return {row[0] for row in rows}

    def health(self, endpoint: str, since: float, until: float) -> HealthReport:
        """Per-version requests, errors (any non-2xx) and latencies in [since, until), of the
        requests served (mirrored ones are the shadow step's, not the traffic's)."""
        with self._connect() as db:
            rows = db.execute("SELECT version, status, latency_ms FROM payloads "
                              "WHERE endpoint = ? AND ts >= ? AND ts < ? AND version IS NOT NULL "
                              "AND shadow = 0",
                              (endpoint, since, until)).fetchall()
        figures: dict[str, list] = {}
        for version, status, latency in rows:
            entry = figures.setdefault(version, [0, 0, {}])
            entry[0] += 1
            entry[1] += 0 if 200 <= status < 300 else 1
            rounded = round(float(latency), 2)
            entry[2][rounded] = entry[2].get(rounded, 0) + 1
        versions = {version: VersionHealth(version, requests, errors,
                                           tuple(sorted(latencies.items())))
                    for version, (requests, errors, latencies) in figures.items()}
        return HealthReport(endpoint=endpoint, window_start=since, window_end=until,
                            versions=versions, cumulative=True)
