"""What the rollout routes answer, read from the rollout store alone where they can: listing and
showing rollouts, or refusing a request, needs no serving backend. Acting on serving does; without
one, a route answers 503 naming what to configure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

from shared.foundation.failpoints import failpoint
from shared.foundation.http import BodyError, Reply, error_reply, parse_body, unavailable

if TYPE_CHECKING:
    from shared.rollout.store import RolloutStore

log = logging.getLogger("gatehouse.rollout")
STORE_UNAVAILABLE = "the rollout store cannot be reached; retry shortly"
T = TypeVar("T")


def _service():
    from shared.rollout.service import from_runtime

    return from_runtime()


class Refused(Exception):
    """A route cannot go on; `reply` says why (no serving backend, the store unreachable)."""

    def __init__(self, reply: Reply):
        super().__init__(reply.body)
        self.reply = reply


def configured_service():
    """The service, for routes that act on serving; without a serving backend, a 503 naming the
    settings to configure (a configuration problem, so no Retry-After)."""
    from shared.serving.base import ServingError

    try:
        return _service()
    except ServingError as exc:
        raise Refused(error_reply(503, f"rollouts cannot act here: {exc}")) from None


@lru_cache(maxsize=4)
def connect_store(connection_string: str) -> RolloutStore:
    from shared.rollout.store import RolloutStore

    return RolloutStore.connect(connection_string)


def read_store(read: Callable[[RolloutStore], T]) -> T:
    """`read` on the rollout store alone (reading needs no serving backend); a 503 with
    Retry-After when the store cannot be reached."""
    from shared.foundation import runtime

    try:
        return read(connect_store(runtime.storage_connection()))
    except Exception:
        log.exception("could not read the rollout store")
        raise Refused(unavailable(STORE_UNAVAILABLE)) from None


def require_rollout(endpoint: str) -> None:
    from shared.rollout.service import no_rollout

    if not has_rollout(endpoint):
        raise Refused(no_rollout(endpoint))


def has_rollout(endpoint: str) -> bool:
    return read_store(lambda store: store.load(endpoint).record) is not None


class LinkRollbacks:
    """What a one-click link asks of the rollout service, which is built only once a valid link
    names an endpoint with a rollout: any other link is answered without a serving backend."""

    def rollback_preview(self, endpoint: str, rollout_id: str) -> Reply:
        from shared.rollout.service import no_rollout

        if not has_rollout(endpoint):
            return no_rollout(endpoint)
        return configured_service().rollback_preview(endpoint, rollout_id)

    def request_rollback(self, endpoint: str, *, actor: str, reason: str,
                         version: str | None = None, rollout_id: str | None = None) -> Reply:
        return configured_service().request_rollback(endpoint, actor=actor, reason=reason,
                                                      version=version, rollout_id=rollout_id)




def ramp(endpoint: str) -> Reply:
    try:
        require_rollout(endpoint)
        service = configured_service()
    except Refused as refused:
        return refused.reply
    reply = service.ramp_now(endpoint)
    failpoint("rollout.http_ramp_done")  # a redo is one more tick: judged on the saved state
    return reply


def ask_rollback(endpoint: str, body: bytes) -> Reply:
    from shared.rollout.service import RollbackAsk

    try:
        ask = parse_body(RollbackAsk, body)
        require_rollout(endpoint)
        service = configured_service()
    except BodyError as exc:
        return exc.reply()
    except Refused as refused:
        return refused.reply
    reply = service.request_rollback(endpoint, actor=ask.actor, reason=ask.reason)
    failpoint("rollout.http_rollback_requested")  # a redo finds it rolling back already: 409
    return reply


def rollout_list() -> Reply:
    from shared.rollout.service import RolloutService

    try:
        records = read_store(lambda store: store.records())
    except Refused as refused:
        return refused.reply
    return Reply(200, {"rollouts": [RolloutService.describe(r) for r in records]})


def rollout_detail(endpoint: str) -> Reply:
    from shared.rollout.service import RolloutService, no_rollout

    try:
        record, history = read_store(lambda store: (store.load(endpoint).record,
                                                    store.history(endpoint)))
    except Refused as refused:
        return refused.reply
    if record is None:
        return no_rollout(endpoint)
    return Reply(200, {**RolloutService.describe(record),
                       "history": [t.model_dump(mode="json") for t in history]})


def link(request, secret: str, now: float) -> Reply:
    from shared.rollout.links import answer_link

    try:
        store = read_store(lambda store: store)
        return answer_link(request, secret, store, LinkRollbacks(), now=now)
    except Refused as refused:
        return refused.reply
