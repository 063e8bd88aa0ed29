"""Rollout handlers: start the canary, ramp traffic on a timer (or on demand), roll back.

- start_canary   queue `start-canary`  (the router forwards `gates.passed`)
- ramp_traffic   timer every 30 s, and POST /api/rollouts/{endpoint}/ramp
- open_rollback  queue `open-rollback` (the router forwards `rollout.rollback_requested`)
- POST /api/rollouts/{endpoint}/rollback      a person asks (function key)
- GET  /api/rollouts/rollback?token=...       the signed one-click link: a confirmation page
- POST /api/rollouts/rollback?token=...       ... whose button rolls back (once)
- GET  /api/rollouts, GET /api/rollouts/{endpoint}   state and history as JSON

Cold start: only azure.functions at module level; the rest loads inside the handlers.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.platform.logs import event_log_context
from shared.platform.queues import OPEN_ROLLBACK, START_CANARY

bp = func.Blueprint()
log = logging.getLogger("gatehouse.rollout")
MAX_REASON = 2000


def _json(status: int, body: dict | list) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status,
                             mimetype="application/json")


def _service():
    from shared.rollout.service import from_runtime

    return from_runtime()


@bp.queue_trigger(arg_name="msg", queue_name=START_CANARY, connection="AzureWebJobsStorage")
@event_log_context
def start_canary(msg: func.QueueMessage) -> None:
    from shared.platform import runtime
    from shared.events import Envelope, GatesPassed
    from shared.platform.handling import process_once

    envelope = Envelope.from_json_expecting(msg.get_body(), GatesPassed)
    data = envelope.data
    service = _service()
    process_once(runtime.idempotency(), "start_canary", envelope.id, lambda: service.start(
        data.model_name, data.version, actor=data.decision.actor,
        reason=f"gates passed: {data.decision.reason}", source_event_id=envelope.id))


@bp.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", run_on_startup=False,
                  use_monitor=False)
def ramp_traffic(timer: func.TimerRequest) -> None:
    for result in _service().ramp():
        log.info("ramp: %s", json.dumps(result, default=str)[:2000])


@bp.route(route="rollouts/{endpoint}/ramp", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def ramp_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    endpoint = req.route_params.get("endpoint", "")
    service = _service()
    if service.store.load(endpoint).record is None:
        return _json(404, {"error": f"no rollout has ever run on endpoint {endpoint!r}"})
    result = service.ramp(endpoint)[0]
    return _json(502 if "error" in result else 200, result)


@bp.queue_trigger(arg_name="msg", queue_name=OPEN_ROLLBACK, connection="AzureWebJobsStorage")
@event_log_context
def open_rollback(msg: func.QueueMessage) -> None:
    from shared.platform import runtime
    from shared.events import Envelope, RollbackRequested
    from shared.platform.handling import process_once

    envelope = Envelope.from_json_expecting(msg.get_body(), RollbackRequested)
    data = envelope.data
    service = _service()
    process_once(runtime.idempotency(), "open_rollback", envelope.id, lambda: service.open_rollback(
        data.endpoint, data.version, actor=data.decision.actor, reason=data.decision.reason))


def _rollback_body(req: func.HttpRequest) -> tuple[str, str] | str:
    """(actor, reason) from the JSON body, or the message saying what is wrong with it."""
    try:
        body = req.get_json()
    except ValueError:
        return "the body must be JSON: {\"actor\": \"who\", \"reason\": \"why\"}"
    if not isinstance(body, dict):
        return "the body must be a JSON object with actor and reason"
    unknown = set(body) - {"actor", "reason"}
    if unknown:
        return f"unknown fields: {', '.join(sorted(unknown))} (allowed: actor, reason)"
    actor, reason = body.get("actor"), body.get("reason")
    for name, value in (("actor", actor), ("reason", reason)):
        if not isinstance(value, str) or not value.strip():
            return f"{name} is required: a non-empty string"
    if len(reason) > MAX_REASON or len(actor) > 200:
        return f"actor is at most 200 and reason at most {MAX_REASON} characters"
    return actor.strip(), reason.strip()


@bp.route(route="rollouts/{endpoint}/rollback", methods=["POST"],
          auth_level=func.AuthLevel.FUNCTION)
def rollback_endpoint(req: func.HttpRequest) -> func.HttpResponse:
    parsed = _rollback_body(req)
    if isinstance(parsed, str):
        return _json(400, {"error": parsed})
    actor, reason = parsed
    outcome = _service().request_rollback(req.route_params.get("endpoint", ""), actor=actor,
                                          reason=reason)
    return _json(outcome.status, outcome.body)


def _wants_html(req: func.HttpRequest) -> bool:
    return "text/html" in (req.headers.get("accept") or "")


def _link_reply(req: func.HttpRequest, status: int, body: dict) -> func.HttpResponse:
    """A browser gets a page, anything else JSON."""
    if not _wants_html(req):
        return _json(status, body)
    from shared.rollout.links import message_page

    title = "Rollback requested" if status == 202 else "Nothing was rolled back"
    text = body.get("error") or (f"Gatehouse is rolling back v{body.get('version')} on "
                                 f"{body.get('endpoint')}; the notifications follow it.")
    return func.HttpResponse(message_page(title, text), status_code=status, mimetype="text/html")


def _link_token(req: func.HttpRequest) -> str:
    """The token from the query string, or from the confirmation form's body."""
    from urllib.parse import parse_qs

    if req.params.get("token"):
        return req.params["token"]
    form = parse_qs((req.get_body() or b"").decode("utf-8", errors="replace"))
    return (form.get("token") or [""])[-1]


@bp.route(route="rollouts/rollback", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
def rollback_link(req: func.HttpRequest) -> func.HttpResponse:
    """The one-click link. Opening it (GET) changes nothing: it shows what would be rolled back,
    because chat apps, link previews and mail scanners fetch links by themselves. Its button
    POSTs the token, which is the authentication and works once."""
    import time

    from shared.rollout.links import LinkError, confirmation_page, link_secret, read_token

    secret = link_secret()
    if secret is None:
        return _link_reply(req, 404, {"error": "one-click rollback links are not enabled here"})
    token = _link_token(req)
    try:
        claims = read_token(secret, token, now=time.time())
    except LinkError as exc:
        return _link_reply(req, exc.status, {"error": str(exc)})
    service = _service()
    spent = f"rollback-link|{claims.nonce}"
    if service.store.used(spent):
        return _link_reply(req, 410, {"error": "this rollback link was used already"})
    preview = service.rollback_preview(claims.endpoint, claims.rollout_id)
    if preview.status != 200:
        return _link_reply(req, preview.status, preview.body)
    if req.method == "GET":
        if _wants_html(req):
            return func.HttpResponse(confirmation_page(preview.body, token), mimetype="text/html")
        return _json(200, {**preview.body, "confirm": "POST to this URL to roll back"})
    if not service.store.use_once(spent, {
            "endpoint": claims.endpoint, "rollout_id": claims.rollout_id,
            "used_at": time.time()}):
        return _link_reply(req, 410, {"error": "this rollback link was used already"})
    outcome = service.request_rollback(claims.endpoint, actor="rollback-link",
                                       reason="one-click rollback link",
                                       rollout_id=claims.rollout_id)
    return _link_reply(req, outcome.status, outcome.body)


@bp.route(route="rollouts", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_rollouts(req: func.HttpRequest) -> func.HttpResponse:
    return _json(200, {"rollouts": _service().overview()})


@bp.route(route="rollouts/{endpoint}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def get_rollout(req: func.HttpRequest) -> func.HttpResponse:
    endpoint = req.route_params.get("endpoint", "")
    detail = _service().detail(endpoint)
    if detail is None:
        return _json(404, {"error": f"no rollout has ever run on endpoint {endpoint!r}"})
    return _json(200, detail)
