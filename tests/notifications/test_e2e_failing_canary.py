"""End to end on Azurite: a canary that fails, told through the notify handler to real clients.

CanaryStarted -> TrafficRamped -> RollbackRequested (the judge) -> RollbackCompleted gives one
Slack thread whose Roll back button works (a signed click reaches the slack_actions handler and
a RollbackRequested lands on gatehouse-events), one PagerDuty incident resolved once the rollback
completes, and one Teams card carrying a signed one-click rollback link for that rollout.
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlsplit

import azure.functions as func

from functions.notify import notify
from functions.slack_actions import slack_actions
from shared.channels import slack
from shared.events import RollbackRequested
from shared.foundation.bus import GATEHOUSE_EVENTS, Bus
from shared.foundation.idempotency import COMPLETED, IdempotencyStore
from tests.notifications import builders
from tests.notifications.conftest import MLFLOW_UI


def run_notify(envelope) -> None:
    notify(func.QueueMessage(body=envelope.to_json().encode()))


def active_rollout(storage: str, model: str, endpoint: str, version: str) -> str:
    """The rollout record the rollout handlers keep for a canary (shared/rollout/store.py)."""
    from shared.rollout.machine import EndpointRecord, Phase, new_rollout
    from shared.rollout.store import Loaded, RolloutStore

    rollout = new_rollout(model, endpoint, version, "1", Phase.CANARY, time.time())
    RolloutStore.connect(storage).save(Loaded(None, None), EndpointRecord(
        endpoint=endpoint, model_name=model, champion="1", active=rollout))
    return rollout.id


def test_a_failing_canary_gives_one_thread_one_incident_and_one_card(
        channel_env, storage_env, peers, signing_secret, model_name, monkeypatch):
    from shared.rollout.links import read_token

    slack_peer, pagerduty_peer, teams_peer = peers
    endpoint = f"{model_name}-prod"
    link_secret = secrets.token_urlsafe(24)
    monkeypatch.setenv("GATEHOUSE_ROLLBACK_LINK_SECRET", link_secret)
    monkeypatch.setenv("GATEHOUSE_PUBLIC_URL", "https://gatehouse.test.invalid")
    rollout_id = active_rollout(storage_env, model_name, endpoint, "2")
    started = builders.notification_envelope(builders.canary_started(model_name, endpoint))
    ramped = builders.notification_envelope(builders.traffic_ramped(model_name, endpoint))
    requested = builders.notification_envelope(builders.rollback_requested(model_name, endpoint))
    completed = builders.notification_envelope(builders.rollback_completed(model_name, endpoint))

    for envelope in (started, ramped, requested):
        run_notify(envelope)

    [root] = [m for m in slack_peer.roots() if model_name in m["text"]]
    assert root["blocks"][0]["text"]["text"].startswith(f"Rollback requested: {model_name} v2")
    buttons = {b["action_id"]: b for b in root["blocks"][-1]["elements"]}
    assert buttons[slack.OPEN_MLFLOW_ACTION_ID]["url"] == \
        f"{MLFLOW_UI}/#/models/{model_name}/versions/2"
    [incident] = pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    assert incident["status"] == "triggered" and incident["severity"] == "error"

    # Someone clicks Roll back on the thread's head message, as Slack would post it.
    payload = builders.block_actions_payload(buttons[slack.ROLLBACK_ACTION_ID],
                                             user_id="U0ONCALL", user_name="oncall",
                                             channel_id=root["channel"], message_ts=root["ts"])
    body, headers = builders.signed_slack_request(signing_secret, payload)
    reply = slack_actions(func.HttpRequest("POST", "http://127.0.0.1/api/slack/actions",
                                           body=body, headers=headers))
    assert reply.status_code == 200
    clicked = [e for e in Bus(storage_env).peek(GATEHOUSE_EVENTS)
               if isinstance(e.data, RollbackRequested) and e.data.model_name == model_name]
    assert len(clicked) == 1
    assert (clicked[0].data.version, clicked[0].data.endpoint) == ("2", endpoint)
    assert clicked[0].data.decision.actor == "slack:U0ONCALL/oncall"

    run_notify(completed)
    run_notify(requested)  # an at-least-once redelivery changes nothing

    # One thread: the head plus a reply per later step, the head now saying it rolled back.
    [root] = [m for m in slack_peer.roots() if model_name in m["text"]]
    replies = slack_peer.replies(root["ts"])
    assert [r["text"].split(":")[0] for r in replies] == [
        f"{model_name} v2 ramped to 25% on {endpoint}", "Rollback requested", "Rolled back"]
    assert root["blocks"][0]["text"]["text"] == f"Rolled back: {model_name} v2 on {endpoint}"
    assert all(b["type"] != "actions" or all(e["action_id"] != slack.ROLLBACK_ACTION_ID
                                             for e in b["elements"]) for b in root["blocks"])

    # One PagerDuty incident, resolved after the rollback completed.
    [incident] = pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    assert incident["status"] == "resolved" and incident["triggers"] == 1
    actions = [e["event_action"] for e in pagerduty_peer.events
               if e.get("dedup_key", "").startswith(f"gatehouse/{model_name}/")]
    assert actions == ["trigger", "resolve"]

    # One Teams card: the automatic rollback (the rest is below the Teams route's severity),
    # with a one-click link signed for this very rollout.
    [card] = teams_peer.cards_about(model_name)
    content = card["attachments"][0]["content"]
    assert content["body"][0]["text"].startswith("Rollback requested")
    link = content["actions"][0]
    assert link["title"] == "Roll back"
    assert link["url"].startswith("https://gatehouse.test.invalid/api/rollouts/rollback?token=")
    claims = read_token(link_secret, parse_qs(urlsplit(link["url"]).query)["token"][0],
                        now=time.time())
    assert (claims.endpoint, claims.rollout_id) == (endpoint, rollout_id)
    assert link_secret not in str(card)

    store = IdempotencyStore.connect(storage_env)
    for envelope in (started, ramped, requested, completed):
        assert store.status("notify", envelope.id) == COMPLETED
