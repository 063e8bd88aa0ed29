"""`POST /api/slack/actions`: Slack's interactive requests (button clicks), signed by Slack.

A *Roll back* click becomes a RollbackRequested carrying the Slack user, published for the
rollback handler; *Open in MLflow* clicks are acknowledged. Slack wants an answer within 3 s: the
handler verifies, publishes one queue message and answers.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("gatehouse.slack")


def _error(status: int, message: str, headers: dict | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"error": message}), status_code=status,
                             headers=headers or {}, mimetype="application/json")


@bp.route(route="slack/actions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def slack_actions(req: func.HttpRequest) -> func.HttpResponse:
    from pydantic import ValidationError

    from shared.platform import runtime
    from shared.channels import slack

    body = req.get_body() or b""
    settings = runtime.settings()
    limit = settings.max_body_bytes
    if len(body) > limit:
        return _error(413, f"request body is {len(body)} bytes; the limit is {limit}")
    try:
        slack.verify_request(req.headers, body, settings.slack_signing_secret or "")
        payload = slack.interaction_payload(body, req.headers.get("content-type"))
        click = slack.rollback_click(payload)
        envelope = slack.rollback_request(click) if click is not None else None
    except slack.SlackRequestError as exc:
        log.info("Slack action refused (%d): %s", exc.status, exc.message)
        return _error(exc.status, exc.message)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"the Roll back button names an invalid target: {problems}")
    if envelope is None:
        return func.HttpResponse(status_code=200)  # another button (Open in MLflow): just ack
    try:
        runtime.bus().publish(envelope)
    except Exception:
        log.exception("could not publish the rollback request %s", envelope.id)
        return _error(503, "could not record the rollback request; click again in a moment",
                      {"Retry-After": "5"})
    log.info("rollback of %s requested from Slack by %s: event %s", envelope.subject,
             envelope.data.decision.actor, envelope.id)
    return func.HttpResponse(status_code=200)
