"""How every queue handler reads its message and does its work at most once.

`consume(queue, handler, body, work)` is the one path a queue message takes (the router,
run-gates and every `process_event` handler go through it):
 - a claim-check reference is swapped for the envelope it names (shared/foundation/claims.py);
 - a twin in progress (AlreadyInProgress: a live worker holds the message's idempotency key,
   e.g. a redelivery of a message still being worked on) is not a failure: the same message
   goes back on the handler's own queue, visible when the holder's lease ends, and the handler
   returns normally, so the host deletes this copy and nothing reaches poison;
 - any other failure is recorded (shared/foundation/failures.py: handler, attempts, last error)
   and re-raised, so the host retries the message and after maxDequeueCount moves it to
   `<queue>-poison`, where `gatehouse poison list` shows why.

`process_once(store, scope, key, work)` claims the key, renews its lease from a heartbeat every
third of the lease while the work runs, and completes it with the work's result (or releases it
when the work fails). The work must be safe to redo: a crash between the work and the completion
leaves the key to be taken over once the lease runs out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from shared.events import Envelope, PayloadT
from shared.foundation import claims
from shared.foundation.failpoints import failpoint
from shared.foundation.failures import event_id_of
from shared.foundation.idempotency import (
    AlreadyCompleted,
    AlreadyInProgress,
    Claim,
    IdempotencyStore,
    Result,
)
from shared.foundation.logs import log_context
from shared.foundation.tracing import event_span

log = logging.getLogger("gatehouse")
TWIN_MARGIN_SECONDS = 2.0  # past the holder's lease, so the rescheduled copy finds it settled


class MessageBus(Protocol):
    def open(self, body: bytes) -> bytes: ...
    def resend(self, queue: str, body: bytes, delay_seconds: float) -> str: ...


class FailureRecorder(Protocol):
    def record(self, queue: str, handler: str, body: bytes, error: BaseException) -> object: ...


def _runtime_bus() -> MessageBus:
    from shared.foundation import runtime

    bus: MessageBus = runtime.bus()
    return bus


def _runtime_failures() -> FailureRecorder:
    from shared.foundation import runtime

    failures: FailureRecorder = runtime.failures()
    return failures


def consume(queue: str, handler: str, body: bytes | str, work: Callable[[bytes], Result],
            bus: MessageBus | None = None, failures: FailureRecorder | None = None) -> Result:
    """Run a queue handler's `work` on its message's content (see the module docstring);
    `queue` is the queue the message came from, `handler` names the handler in failure records.
    Returns work's result, or None when the message was rescheduled as a twin in progress."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    try:
        try:
            content = raw if claims.reference_in(raw) is None else (bus or _runtime_bus()).open(raw)
            return work(content)
        except AlreadyInProgress as busy:
            _reschedule(queue, handler, raw, busy.retry_after, bus or _runtime_bus())
            return None
    except Exception as error:
        _record_failure(queue, handler, raw, error, failures)
        raise


def _reschedule(queue: str, handler: str, raw: bytes, lease_left: float, bus: MessageBus) -> None:
    delay = lease_left + TWIN_MARGIN_SECONDS
    bus.resend(queue, raw, delay)
    failpoint("handling.twin_rescheduled")
    log.info("%s: %s is being processed by another worker; put it back on %s, visible in %.0fs",
             handler, event_id_of(raw) or "the message", queue, delay)


def _record_failure(queue: str, handler: str, raw: bytes, error: Exception,
                    failures: FailureRecorder | None) -> None:
    try:
        (failures or _runtime_failures()).record(queue, handler, raw, error)
    except Exception:
        log.warning("%s: could not record why a message on %s failed", handler, queue,
                    exc_info=True)
        return
    failpoint("handling.failure_recorded")


class LeaseHeartbeat:
    """Renews a claim's lease every third of it from a daemon thread, while the block runs."""

    def __init__(self, store: IdempotencyStore, claim: Claim):
        self.store, self.claim = store, claim
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True,
                                        name=f"lease-{claim.scope}")

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.store.lease_seconds / 3
        while not self._stop.wait(interval):
            try:
                renewed = self.store.renew(self.claim)
            except Exception as exc:
                log.warning("%s: could not renew the lease on %s (%s); trying again in %.0fs",
                            self.claim.scope, self.claim.key, exc, interval)
                continue
            if not renewed:
                log.warning("%s: the lease on %s was taken over while this worker still held "
                            "it; another worker may be doing the same work", self.claim.scope,
                            self.claim.key)
                return


def process_once(store: IdempotencyStore, scope: str, key: str, work: Callable[[], Result],
                 ttl_seconds: float | None = None) -> Result:
    """Do `work` unless `key` was done already in `scope`; returns work's (or the stored) result.

    A failure releases the key and re-raises, so the queue redelivers and a retry can do the work;
    a key held by a live worker raises AlreadyInProgress (`consume` reschedules the message).
    The completion is remembered for `ttl_seconds` (default: the store's).
    """
    try:
        claim = store.claim(scope, key)
    except AlreadyCompleted as done:
        log.info("%s: %s was processed already; skipping the repeat", scope, key)
        return done.result
    try:
        with LeaseHeartbeat(store, claim):
            result = work()
            failpoint("handling.work_done")
    except BaseException:
        store.release(claim)
        raise
    if ttl_seconds is None:
        store.complete(claim, result)
    else:
        store.complete(claim, result, ttl_seconds=ttl_seconds)
    failpoint("handling.completed")
    return result


def process_event(body: bytes | str, payload_type: type[PayloadT], scope: str,
                  work: Callable[[Envelope, PayloadT], Result],
                  store: IdempotencyStore | None = None, *, queue: str,
                  bus: MessageBus | None = None,
                  failures: FailureRecorder | None = None) -> Result:
    """A message from the handler queue `queue`, which must carry `payload_type` (anything else
    raises, so it ends on the poison queue intact), processed once per event id in `scope`
    through `consume`; everything logged meanwhile carries the event's fields."""

    def once(content: bytes) -> Result:
        from shared.foundation import runtime

        envelope = Envelope.from_json_expecting(content, payload_type)
        data = envelope.data_as(payload_type)
        with log_context(envelope), event_span(envelope, scope):
            return process_once(store or runtime.idempotency(), scope, envelope.id,
                                lambda: work(envelope, data))

    return consume(queue, scope, body, once, bus, failures)
