"""Slack's signed interaction requests: verification (valid, tampered, stale, missing) and the
`POST /api/slack/actions` handler turning a Roll back click into a published RollbackRequested."""

from __future__ import annotations

import json
import time

import azure.functions as func
import pytest

from functions.slack_actions import slack_actions
from shared.channels import slack
from shared.channels.base import RollbackTarget
from shared.events import RollbackRequested
from shared.foundation.bus import GATEHOUSE_EVENTS, Bus
from tests.notifications.builders import block_actions_payload, signed_slack_request

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TARGET = RollbackTarget("fraud", "2", "fraud-prod")
ROLLBACK_BUTTON = {"action_id": slack.ROLLBACK_ACTION_ID, "value": slack.rollback_value(TARGET),
                   "text": {"type": "plain_text", "text": "Roll back"}}


def request(body: bytes, headers: dict) -> func.HttpRequest:
    return func.HttpRequest("POST", "http://127.0.0.1/api/slack/actions", body=body,
                            headers=headers)


# ---- verification (slack-sdk's SignatureVerifier) ----

def test_a_validly_signed_request_passes():
    body, headers = signed_slack_request(SECRET, block_actions_payload(ROLLBACK_BUTTON))
    slack.verify_request(headers, body, SECRET)


@pytest.mark.parametrize("change,reason", [
    (lambda b, h: (b + b"&x=1", h), "does not match"),                       # tampered body
    (lambda b, h: (b, {**h, "X-Slack-Signature": "v0=" + "0" * 64}), "does not match"),
    (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Slack-Signature"}),
     "missing header X-Slack-Signature"),
    (lambda b, h: (b, {k: v for k, v in h.items() if k != "X-Slack-Request-Timestamp"}),
     "missing header X-Slack-Request-Timestamp"),
    (lambda b, h: (b, {**h, "X-Slack-Request-Timestamp": "yesterday"}), "not a Unix time"),
])
def test_tampered_or_incomplete_requests_are_refused(change, reason):
    body, headers = signed_slack_request(SECRET, block_actions_payload(ROLLBACK_BUTTON))
    body, headers = change(body, headers)
    with pytest.raises(slack.SlackRequestError, match=reason) as refused:
        slack.verify_request(headers, body, SECRET)
    assert refused.value.status == 401


def test_stale_and_future_requests_are_refused_even_when_signed_correctly():
    for skew in (-301, 301):
        body, headers = signed_slack_request(SECRET, block_actions_payload(ROLLBACK_BUTTON),
                                             timestamp=int(time.time()) + skew)
        with pytest.raises(slack.SlackRequestError, match="stale request"):
            slack.verify_request(headers, body, SECRET)
    body, headers = signed_slack_request(SECRET, block_actions_payload(ROLLBACK_BUTTON),
                                         timestamp=int(time.time()) - 299)
    slack.verify_request(headers, body, SECRET)


def test_a_request_signed_with_another_secret_is_refused():
    body, headers = signed_slack_request("another-secret", block_actions_payload(ROLLBACK_BUTTON))
    with pytest.raises(slack.SlackRequestError, match="does not match"):
        slack.verify_request(headers, body, SECRET)


def test_without_a_signing_secret_nothing_is_accepted():
    body, headers = signed_slack_request(SECRET, block_actions_payload(ROLLBACK_BUTTON))
    with pytest.raises(slack.SlackRequestError, match="not configured"):
        slack.verify_request(headers, body, None)


# ---- the handler ----

@pytest.fixture
def actions_env(storage_env, monkeypatch):
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SECRET)
    return Bus(storage_env)


def published_rollbacks(bus: Bus, actor_prefix: str) -> list:
    return [e for e in bus.peek(GATEHOUSE_EVENTS) if isinstance(e.data, RollbackRequested)
            and e.data.decision.actor.startswith(actor_prefix)]


def test_a_roll_back_click_publishes_a_rollback_request_with_the_slack_user(actions_env):
    user = f"U{time.time_ns()}"
    payload = block_actions_payload(ROLLBACK_BUTTON, user_id=user, user_name="alice")
    body, headers = signed_slack_request(SECRET, payload)
    started = time.monotonic()
    reply = slack_actions(request(body, headers))
    assert reply.status_code == 200
    assert time.monotonic() - started < 3.0  # Slack gives up after 3 s
    published = published_rollbacks(actions_env, f"slack:{user}")
    assert len(published) == 1
    event = published[0]
    assert (event.data.model_name, event.data.version, event.data.endpoint) == \
        ("fraud", "2", "fraud-prod")
    assert event.data.decision.actor == f"slack:{user}/alice"
    assert "clicked in Slack by alice" in event.data.decision.reason
    # Slack retrying the same click yields the same event id, so the rollback runs once.
    assert slack_actions(request(body, headers)).status_code == 200
    assert {e.id for e in published_rollbacks(actions_env, f"slack:{user}")} == {event.id}


def test_other_buttons_are_acknowledged_and_publish_nothing(actions_env):
    user = f"U{time.time_ns()}"
    button = {"action_id": slack.OPEN_MLFLOW_ACTION_ID,
              "text": {"type": "plain_text", "text": "Open in MLflow"}}
    body, headers = signed_slack_request(SECRET, block_actions_payload(button, user_id=user))
    assert slack_actions(request(body, headers)).status_code == 200
    assert published_rollbacks(actions_env, f"slack:{user}") == []


@pytest.mark.parametrize("make,status,message", [
    (lambda: signed_slack_request("wrong", block_actions_payload(ROLLBACK_BUTTON)), 401,
     "does not match"),
    (lambda: signed_slack_request(SECRET, block_actions_payload(ROLLBACK_BUTTON),
                                  timestamp=int(time.time()) - 600), 401, "stale request"),
    (lambda: (b"payload=%7B%7D", {"Content-Type": "application/x-www-form-urlencoded"}), 401,
     "missing header X-Slack-Signature"),
])
def test_the_handler_refuses_unverified_requests_with_the_reason(actions_env, make, status,
                                                                 message):
    body, headers = make()
    reply = slack_actions(request(body, headers))
    assert reply.status_code == status
    assert message in json.loads(reply.get_body())["error"]


def _signed_raw(body: bytes, content_type: str = "application/x-www-form-urlencoded"):
    from slack_sdk.signature import SignatureVerifier

    stamp = str(int(time.time()))
    return body, {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp,
                  "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(
                      timestamp=stamp, body=body)}


@pytest.mark.parametrize("body,content_type,status,message", [
    (b"text=hello", "application/x-www-form-urlencoded", 400, "no payload field"),
    (b"payload=%7Bnot-json", "application/x-www-form-urlencoded", 400, "not valid JSON"),
    (b"payload=%7B%22type%22%3A%22view_submission%22%7D", "application/x-www-form-urlencoded",
     400, "view_submission"),
    (b'{"payload": {}}', "application/json", 415, "application/x-www-form-urlencoded"),
])
def test_signed_but_malformed_requests_get_a_clear_4xx(actions_env, body, content_type, status,
                                                       message):
    reply = slack_actions(request(*_signed_raw(body, content_type)))
    assert reply.status_code == status
    assert message in json.loads(reply.get_body())["error"]


def test_a_roll_back_button_with_a_bad_value_is_a_400(actions_env):
    button = {**ROLLBACK_BUTTON, "value": json.dumps({"model": "m", "version": "1"})}
    body, headers = signed_slack_request(SECRET, block_actions_payload(button))
    reply = slack_actions(request(body, headers))
    assert reply.status_code == 400 and "lacks endpoint" in json.loads(reply.get_body())["error"]
