"""`POST /api/slack/actions`: Slack's interactive requests (button clicks), signed by Slack.

A *Roll back* click becomes a RollbackRequested carrying the Slack user, published for the
rollback handler; *Open in MLflow* clicks are acknowledged. Slack wants an answer within 3 s: the
handler verifies, publishes one queue message and answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from shared.foundation.failpoints import failpoint
from shared.foundation.http import (
    BodyError,
    Reply,
    error_reply,
    json_text,
    respond,
    too_large,
    unavailable,
    validation_problems,
)

bp = func.Blueprint()
log = logging.getLogger("gatehouse.slack")


@bp.route(route="slack/actions", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def slack_actions(req: func.HttpRequest) -> func.HttpResponse:
    from shared.foundation import runtime

    body = req.get_body() or b""
    settings = runtime.settings()
    limit = settings.max_body_bytes
    if len(body) > limit:
        return respond(too_large(len(body), limit))
    return respond(_act(req.headers, body, settings.slack_signing_secret or "", runtime.bus))


def _act(headers, body: bytes, signing_secret: str, bus: Callable) -> Reply:
    """Verify, read the click, publish the rollback it asks for; Slack wants an answer in 3 s."""
    from pydantic import ValidationError

    from shared.channels import slack

    unreadable = _unverifiable(headers, body)
    if unreadable:
        log.info("Slack action refused (400): %s", unreadable)
        return error_reply(400, unreadable)
    try:
        slack.verify_request(headers, body, signing_secret)
        _check_payload_json(body)
        payload = slack.interaction_payload(body, headers.get("content-type"))
        click = slack.rollback_click(payload)
        envelope = slack.rollback_request(click) if click is not None else None
    except slack.SlackRequestError as exc:
        log.info("Slack action refused (%d): %s", exc.status, exc.message)
        return error_reply(exc.status, exc.message)
    except BodyError as exc:
        log.info("Slack action refused (400): %s", exc.message)
        return exc.reply()
    except ValidationError as exc:
        problems = validation_problems(exc)
        return error_reply(400, "the Roll back button names an invalid target: "
                           + "; ".join(problems), problems)
    if envelope is None:
        return Reply(200)  # another button (Open in MLflow): just acknowledge
    try:
        bus().publish(envelope)
    except Exception:
        log.exception("could not publish the rollback request %s", envelope.id)
        return unavailable("could not record the rollback request; click again in a moment")
    # A click delivered again publishes the same event id, which the router drops.
    failpoint("slack.rollback_published")
    log.info("rollback of %s requested from Slack by %s: event %s", envelope.subject,
             envelope.data.decision.actor, envelope.id)
    return Reply(200)


def _unverifiable(headers, body: bytes) -> str | None:
    """What no Slack request has and slack-sdk's verifier raises on instead of refusing: a body
    that is not UTF-8, a signature that is not ASCII, a timestamp that is not a short number."""
    lowered = {name.lower(): value for name, value in headers.items()}
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not UTF-8 form data (byte {exc.start})"
    if not (lowered.get("x-slack-signature") or "").isascii():
        return "X-Slack-Signature is not ASCII"
    timestamp = (lowered.get("x-slack-request-timestamp") or "").strip()
    if timestamp and not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return "X-Slack-Request-Timestamp is not a Unix time in seconds"
    return None


def _check_payload_json(body: bytes) -> None:
    """The form's `payload` field, and the Roll back button's value inside it, read by the
    hardened JSON reader first (BodyError: NaN, deep nesting, lone surrogates, huge numbers),
    before shared.channels.slack reads them with plain json."""
    from urllib.parse import parse_qs

    from shared.channels.slack import ROLLBACK_ACTION_ID

    values = parse_qs(body.decode("utf-8"), keep_blank_values=True).get("payload")
    if not values or not values[0]:
        return  # slack.interaction_payload says what is missing
    payload = json_text(values[0], "the payload field", "payload")
    actions = payload.get("actions") if isinstance(payload, dict) else None
    for action in actions if isinstance(actions, list) else []:
        if (isinstance(action, dict) and action.get("action_id") == ROLLBACK_ACTION_ID
                and isinstance(action.get("value"), str)):
            json_text(action["value"], "the Roll back button's value", "actions.value")
