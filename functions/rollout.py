"""Rollout handlers: start the canary, ramp traffic on a timer (or on demand), roll back.

- start_canary   queue `start-canary`  (the router forwards `gates.passed`)
- ramp_traffic   timer every 30 s, and POST /api/rollouts/{endpoint}/ramp
- open_rollback  queue `open-rollback` (the router forwards `rollout.rollback_requested`)
- POST /api/rollouts/{endpoint}/rollback      a person asks (function key)
- GET  /api/rollouts/rollback?token=...       the signed one-click link: a confirmation page
- POST /api/rollouts/rollback?token=...       ... whose button rolls back (once)
- GET  /api/rollouts, GET /api/rollouts/{endpoint}   state and history as JSON

Cold start: only azure.functions and shared.foundation at module level; the rest loads inside
the handlers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, TypeVar

import azure.functions as func

from shared.foundation.failpoints import failpoint
from shared.foundation.http import BodyError, Reply, error_reply, parse_body, respond, unavailable
from shared.foundation.queues import OPEN_ROLLBACK, START_CANARY

if TYPE_CHECKING:
    from shared.rollout.store import RolloutStore

bp = func.Blueprint()
log = logging.getLogger("gatehouse.rollout")
STORE_UNAVAILABLE = "the rollout store cannot be reached; retry shortly"
T = TypeVar("T")


def _service():
    from shared.rollout.service import from_runtime

    return from_runtime()


class _Refused(Exception):
    """A route cannot go on; `reply` says why (no serving backend, the store unreachable)."""

    def __init__(self, reply: Reply):
        super().__init__(reply.body)
        self.reply = reply


def _configured_service():
    """The service, for routes that act on serving; without a serving backend, a 503 naming the
    settings to configure (a configuration problem, so no Retry-After)."""
    from shared.serving.base import ServingError

    try:
        return _service()
    except ServingError as exc:
        raise _Refused(error_reply(503, f"rollouts cannot act here: {exc}")) from None


@lru_cache(maxsize=4)
def _connect_store(connection_string: str) -> RolloutStore:
    from shared.rollout.store import RolloutStore

    return RolloutStore.connect(connection_string)


def _read(read: Callable[[RolloutStore], T]) -> T:
    """`read` on the rollout store alone (reading needs no serving backend); a 503 with
    Retry-After when the store cannot be reached."""
    from shared.foundation import runtime

    try:
        return read(_connect_store(runtime.storage_connection()))
    except Exception:
        log.exception("could not read the rollout store")
        raise _Refused(unavailable(STORE_UNAVAILABLE)) from None


def _require_rollout(endpoint: str) -> None:
    from shared.rollout.service import no_rollout

    if not _has_rollout(endpoint):
        raise _Refused(no_rollout(endpoint))


def _has_rollout(endpoint: str) -> bool:
    return _read(lambda store: store.load(endpoint).record) is not None


class _LinkRollbacks:
    """What a one-click link asks of the rollout service, which is built only once a valid link
    names an endpoint with a rollout: any other link is answered without a serving backend."""

    def rollback_preview(self, endpoint: str, rollout_id: str) -> Reply:
        from shared.rollout.service import no_rollout

        if not _has_rollout(endpoint):
            return no_rollout(endpoint)
        return _configured_service().rollback_preview(endpoint, rollout_id)

    def request_rollback(self, endpoint: str, *, actor: str, reason: str,
                         version: str | None = None, rollout_id: str | None = None) -> Reply:
        return _configured_service().request_rollback(endpoint, actor=actor, reason=reason,
                                                      version=version, rollout_id=rollout_id)


@bp.queue_trigger(arg_name="msg", queue_name=START_CANARY, connection="AzureWebJobsStorage")
def start_canary(msg: func.QueueMessage) -> None:
    from shared.events import Envelope, GatesPassed
    from shared.foundation.handling import process_event

    def start(envelope: Envelope, passed: GatesPassed) -> dict:
        return _service().start(passed.model_name, passed.version, actor=passed.decision.actor,
                                reason=f"gates passed: {passed.decision.reason}",
                                source_event_id=envelope.id)

    process_event(msg.get_body(), GatesPassed, "start_canary", start, queue=START_CANARY)


@bp.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", run_on_startup=False,
                  use_monitor=False)
def ramp_traffic(timer: func.TimerRequest) -> None:
    for result in _service().ramp():
        log.info("ramp: %s", json.dumps(result, default=str)[:2000])


@bp.route(route="rollouts/{endpoint}/ramp", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def ramp_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    endpoint = req.route_params.get("endpoint", "")
    try:
        _require_rollout(endpoint)
        service = _configured_service()
    except _Refused as refused:
        return respond(refused.reply)
    reply = service.ramp_now(endpoint)
    failpoint("rollout.http_ramp_done")  # a redo is one more tick: judged on the saved state
    return respond(reply)


@bp.queue_trigger(arg_name="msg", queue_name=OPEN_ROLLBACK, connection="AzureWebJobsStorage")
def open_rollback(msg: func.QueueMessage) -> None:
    from shared.events import Envelope, RollbackRequested
    from shared.foundation.handling import process_event

    def roll_back(_: Envelope, asked: RollbackRequested) -> dict:
        return _service().open_rollback(asked.endpoint, asked.version,
                                        actor=asked.decision.actor, reason=asked.decision.reason)

    process_event(msg.get_body(), RollbackRequested, "open_rollback", roll_back,
                  queue=OPEN_ROLLBACK)


@bp.route(route="rollouts/{endpoint}/rollback", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
def rollback_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    from shared.rollout.service import RollbackAsk

    endpoint = req.route_params.get("endpoint", "")
    try:
        ask = parse_body(RollbackAsk, req.get_body())
        _require_rollout(endpoint)
        service = _configured_service()
    except BodyError as exc:
        return respond(exc.reply())
    except _Refused as refused:
        return respond(refused.reply)
    reply = service.request_rollback(endpoint, actor=ask.actor, reason=ask.reason)
    failpoint("rollout.http_rollback_requested")  # a redo finds it rolling back already: 409
    return respond(reply)


@bp.route(route="rollouts/rollback", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
def rollback_link(req: func.HttpRequest) -> func.HttpResponse:
    """The one-click link: GET shows what would be rolled back (chat apps, link previews and
    mail scanners fetch links by themselves), its button POSTs the token, which works once."""
    import time

    from shared.rollout.links import LinkRequest, answer_link, link_secret, links_off

    request = LinkRequest.read(req.method, req.params.get("token"), req.get_body(),
                               req.headers.get("accept"))
    secret = link_secret()
    if secret is None:
        return respond(links_off(request))
    try:
        store = _read(lambda store: store)
        return respond(answer_link(request, secret, store, _LinkRollbacks(), now=time.time()))
    except _Refused as refused:
        return respond(refused.reply)


@bp.route(route="rollouts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_rollouts(req: func.HttpRequest) -> func.HttpResponse:
    from shared.rollout.service import RolloutService

    try:
        records = _read(lambda store: store.records())
    except _Refused as refused:
        return respond(refused.reply)
    return respond(Reply(200, {"rollouts": [RolloutService.describe(r) for r in records]}))


@bp.route(route="rollouts/{endpoint}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_rollout(req: func.HttpRequest) -> func.HttpResponse:
    from shared.rollout.service import RolloutService, no_rollout

    endpoint = req.route_params.get("endpoint", "")
    try:
        record, history = _read(lambda store: (store.load(endpoint).record,
                                               store.history(endpoint)))
    except _Refused as refused:
        return respond(refused.reply)
    if record is None:
        return respond(no_rollout(endpoint))
    return respond(Reply(200, {**RolloutService.describe(record),
                               "history": [t.model_dump(mode="json") for t in history]}))
