"""Rollout handlers: start the canary, ramp traffic on a timer (or on demand), roll back.

- start_canary   queue `start-canary`  (the router forwards `gates.passed`)
- ramp_traffic   timer every 30 s: one tick per endpoint with work on queue `ramp-ticks`
                 (functions/ticks.py ramps each); POST /api/rollouts/{endpoint}/ramp ramps now
- open_rollback  queue `open-rollback` (the router forwards `rollout.rollback_requested`)
- POST /api/rollouts/{endpoint}/rollback      a person asks (function key)
- GET  /api/rollouts/rollback?token=...       the signed one-click link: a confirmation page
- POST /api/rollouts/rollback?token=...       ... whose button rolls back (once)
- GET  /api/rollouts, GET /api/rollouts/{endpoint}   state and history as JSON

Cold start: only azure.functions and shared.foundation at module level; the rest loads inside
the handlers.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.http import respond
from shared.foundation.queues import OPEN_ROLLBACK, START_CANARY

bp = func.Blueprint()
log = logging.getLogger("gatehouse.rollout")
RAMP_PERIOD_SECONDS = 30.0  # the timer's schedule


def _service():
    from shared.rollout.service import from_runtime

    return from_runtime()


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
    import time

    from shared.foundation import runtime
    from shared.foundation.fanout import TickMarks

    marks = TickMarks.connect(runtime.storage_connection())
    sent = _service().enqueue_ticks(time.time(), RAMP_PERIOD_SECONDS, marks, runtime.bus().send)
    log.info("ramp: %d tick(s) enqueued", len(sent))


@bp.route(route="rollouts/{endpoint}/ramp", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def ramp_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    from shared.rollout import routes

    return respond(routes.ramp(req.route_params.get("endpoint", "")))


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
    from shared.rollout import routes

    return respond(routes.ask_rollback(req.route_params.get("endpoint", ""), req.get_body()))


@bp.route(route="rollouts/rollback", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
def rollback_link(req: func.HttpRequest) -> func.HttpResponse:
    """The one-click link: GET shows what would be rolled back (chat apps, link previews and
    mail scanners fetch links by themselves), its button POSTs the token, which works once."""
    import time

    from shared.rollout import routes
    from shared.rollout.links import LinkRequest, link_secret, links_off

    request = LinkRequest.read(req.method, req.params.get("token"), req.get_body(),
                               req.headers.get("accept"))
    secret = link_secret()
    if secret is None:
        return respond(links_off(request))
    return respond(routes.link(request, secret, time.time()))


@bp.route(route="rollouts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_rollouts(req: func.HttpRequest) -> func.HttpResponse:
    from shared.rollout import routes

    return respond(routes.rollout_list())


@bp.route(route="rollouts/{endpoint}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_rollout(req: func.HttpRequest) -> func.HttpResponse:
    from shared.rollout import routes

    return respond(routes.rollout_detail(req.route_params.get("endpoint", "")))
