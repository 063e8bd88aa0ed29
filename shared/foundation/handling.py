"""Run a queue handler's work at most once per event, however often the message is delivered."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shared.foundation.idempotency import AlreadyCompleted, IdempotencyStore, Result

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
