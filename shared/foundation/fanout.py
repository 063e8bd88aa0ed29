"""Periodic work fanned out over queues: a timer enqueues one tick per endpoint, and queue workers
on every instance do the ticks.

A timer runs on one instance, so a timer that loops over every endpoint itself cannot use more
instances, and one killed at its timeout starves the same tail endpoints each time. The ramp and
monitor timers therefore only call `fan_out`: one `TickDue` per endpoint and tick window
(window = now // period), its id derived from (job, endpoint, window). Before a tick is sent,
it is marked in the state table (one row per job and endpoint: the last window enqueued,
replaced under its ETag; a hundred per table transaction), so a second run in the same window -
an overlapping or repeated timer invocation - finds the mark and adds nothing. A run that dies
between marks and sends loses those endpoints' ticks for this window only: the next window's
tick does the same work (per-endpoint ticks are idempotent and catch up).

Workers read ticks through `take_tick`: a tick past its `expires_at` is dropped (when workers
fall behind, a newer tick repeats its work), anything else goes to the job's per-endpoint work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

from shared.events import Envelope, TickDue
from shared.foundation.failpoints import failpoint
from shared.foundation.handling import consume
from shared.foundation.idempotency import Result
from shared.foundation.logs import log_context
from shared.foundation.state import (
    ConcurrencyConflict,
    Properties,
    Row,
    StateTable,
    Table,
    safe_row_key,
)

log = logging.getLogger("gatehouse.fanout")
TABLE = "gatehouseticks"
SOURCE = "/gatehouse/timer"
SENDERS = 16
TRANSACTION = 100  # entities per table transaction (the service's maximum)
MIN_LIFETIME_SECONDS = 300.0  # a tick lives at least one function timeout
Job = Literal["ramp", "monitor"]
Send = Callable[[str, Envelope], object]


class TickTable(StateTable):
    def mark_all(self, partition: str, marks: list[tuple[str, Properties, str | None]]) -> bool:
        """Write every (row, properties, etag) in one transaction (at most 100, one partition):
        an insert where etag is None, else a replace under the etag; False, and nothing
        written, if any of them conflicts."""
        from azure.core import MatchConditions
        from azure.data.tables import TableTransactionError, UpdateMode

        operations: list = []
        for row, properties, etag in marks:
            entity = {"PartitionKey": partition, "RowKey": row, **properties}
            operations.append(("create", entity) if etag is None else (
                "update", entity, {"mode": UpdateMode.REPLACE, "etag": etag,
                                   "match_condition": MatchConditions.IfNotModified}))
        try:
            self._table.submit_transaction(operations)
        except TableTransactionError:
            return False
        return True


class TickMarks:
    """The last tick window enqueued per (job, endpoint): partition = job, row = the endpoint."""

    def __init__(self, table: TickTable | Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> TickMarks:
        return cls(TickTable(connection_string, TABLE))

    def marked(self, job: Job) -> dict[str, Row]:
        """Every mark of the job (one query)."""
        return {row.properties["endpoint"]: row for row in self.table.rows(job)}

    def mark_many(self, job: Job, endpoints: list[str], window: int,
                  marked: dict[str, Row]) -> list[str]:
        """Mark each endpoint's tick of `window` (one transaction per hundred where the table
        has them); returns those this call marked: not those marked for this or a later window
        already, nor those another run marked meanwhile."""
        due = [e for e in endpoints if e not in marked
               or int(marked[e].properties["window"]) < window]
        if not isinstance(self.table, TickTable):
            return [e for e in due if self.mark(job, e, window, marked.get(e))]
        taken: list[str] = []
        for start in range(0, len(due), TRANSACTION):
            chunk = due[start:start + TRANSACTION]
            rows = [(safe_row_key(e), {"endpoint": e, "window": window},
                     marked[e].etag if e in marked else None) for e in chunk]
            if self.table.mark_all(job, rows):
                taken += chunk
            else:  # another run marked some of them: each on its own
                taken += [e for e in chunk if self.mark(job, e, window, marked.get(e))]
        return taken

    def mark(self, job: Job, endpoint: str, window: int, previous: Row | None) -> bool:
        """Mark the endpoint's tick of `window`; False if this or a later window is marked (by
        `previous`, or by another run since it was read)."""
        if previous is not None and int(previous.properties["window"]) >= window:
            return False
        properties = {"endpoint": endpoint, "window": window}
        row = safe_row_key(endpoint)
        try:
            if previous is None:
                self.table.insert(job, row, properties)
            else:
                self.table.replace(job, row, properties, previous.etag)
        except ConcurrencyConflict:
            return False
        return True


def tick(job: Job, endpoint: str, now: float, period: float, labelled: bool = False) -> TickDue:
    """The tick of `endpoint` in the window `now` falls in."""
    return TickDue(job=job, endpoint=endpoint, window=int(now // period), due_at=now,
                   expires_at=now + max(period, MIN_LIFETIME_SECONDS), labelled=labelled)


def tick_envelope(due: TickDue) -> Envelope:
    """The same id for every run in the tick's window."""
    return Envelope.wrap(due, source=SOURCE, dedupe_key=f"{due.job}|{due.endpoint}|{due.window}")


def fan_out(job: Job, queue: str, endpoints: Iterable[str], now: float, period: float,
            marks: TickMarks, send: Send, labelled: Iterable[str] = ()) -> list[str]:
    """Enqueue this window's tick for each endpoint not ticked in it yet; returns those sent."""
    marked = marks.marked(job)
    with_labels = set(labelled)
    window = int(now // period)
    ordered = sorted(set(endpoints))

    def one(endpoint: str) -> str:
        send(queue, tick_envelope(tick(job, endpoint, now, period, endpoint in with_labels)))
        failpoint("fanout.tick_enqueued")
        return endpoint

    sending = []
    # A queue send per endpoint, each mostly waiting: a few at once, while the next hundred
    # are marked.
    with ThreadPoolExecutor(SENDERS, thread_name_prefix=f"fanout-{job}") as pool:
        for start in range(0, len(ordered), TRANSACTION):
            taken = marks.mark_many(job, ordered[start:start + TRANSACTION], window, marked)
            failpoint("fanout.tick_marked")
            sending += [pool.submit(one, endpoint) for endpoint in taken]
        return [future.result() for future in sending]


def take_tick(body: bytes | str, queue: str, handler: str, work: Callable[[TickDue], Result],
              now: Callable[[], float] = time.time) -> Result:
    """A tick from `queue`: dropped once expired, else `work` on it (through `consume`, so a
    failure is recorded and the message retried, then poisoned)."""

    def run(content: bytes) -> Result:
        envelope = Envelope.from_json_expecting(content, TickDue)
        due = envelope.data_as(TickDue)
        with log_context(envelope):
            if now() > due.expires_at:
                log.info("%s: the %s tick of window %s expired; a newer one repeats it",
                         due.endpoint, due.job, due.window)
                return None
            return work(due)

    return consume(queue, handler, body, run)
