"""Run a queue handler's work at most once per event, however often the message is delivered."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.events import Envelope, PayloadT
from shared.foundation.idempotency import AlreadyCompleted, IdempotencyStore, Result
from shared.foundation.logs import log_context

log = logging.getLogger("gatehouse")


def process_once(store: IdempotencyStore, scope: str, key: str,
                 work: Callable[[], Result]) -> Result:
    """Do `work` unless `key` was done already in `scope`; returns work's (or the stored) result.

    A failure releases the key and re-raises, so the queue redelivers and a retry can do the work;
    a key held by a live worker raises AlreadyInProgress, which also leads to a redelivery.
    """
    try:
        claim = store.claim(scope, key)
    except AlreadyCompleted as done:
        log.info("%s: %s was processed already; skipping the repeat", scope, key)
        return done.result
    try:
        result = work()
    except BaseException:
        store.release(claim)
        raise
    store.complete(claim, result)
    return result


def process_event(body: bytes | str, payload_type: type[PayloadT], scope: str,
                  work: Callable[[Envelope, PayloadT], Result],
                  store: IdempotencyStore | None = None) -> Result:
    """A handler queue's message, which must carry `payload_type` (anything else raises, so it
    ends on the poison queue intact), processed once per event id in `scope`; everything logged
    meanwhile carries the event's fields."""
    from shared.foundation import runtime

    envelope = Envelope.from_json_expecting(body, payload_type)
    data = envelope.data_as(payload_type)
    with log_context(envelope):
        return process_once(store or runtime.idempotency(), scope, envelope.id,
                            lambda: work(envelope, data))
