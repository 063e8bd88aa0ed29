"""Each real client (slack-sdk, pagerduty, requests) against its local peer."""

from __future__ import annotations

import json
import time

import pytest

from shared.channels.base import ChannelError
from shared.channels.pagerduty import OpenIncidents, PagerDutyChannel, events_client
from shared.channels.slack import SlackChannel, SlackThreads, slack_client
from shared.channels.teams import TeamsChannel
from shared.foundation.state import MemoryTable
from tests.notifications import builders
from tests.notifications.conftest import MLFLOW_UI, SLACK_CHANNEL


@pytest.fixture(scope="module")
def table():
    """The clients are under test here; the state table's part is tested on Azurite in
    test_dispatch.py."""
    return MemoryTable()


@pytest.fixture
def slack_channel(slack_peer, slack_token, table, peers):
    return SlackChannel(slack_client(slack_token, slack_peer.api_url, backoff=0.01),
                        SLACK_CHANNEL, SlackThreads(table))


@pytest.fixture
def pagerduty_channel(pagerduty_peer, routing_key, tls_files, table, peers):
    client = events_client(routing_key, f"{pagerduty_peer.url}/v2/enqueue", str(tls_files[0]),
                           sleep_timer=0.01)
    return PagerDutyChannel(client, OpenIncidents(table))


def roots_about(peer, text: str) -> list[dict]:
    return [m for m in peer.roots() if text in m["text"]]


# ---- Slack ----

def test_slack_opens_one_thread_per_version_and_updates_its_head(slack_channel, slack_peer,
                                                                 model_name):
    endpoint = f"{model_name}-prod"
    started = builders.notification_envelope(builders.canary_started(model_name, endpoint))
    ref = slack_channel.deliver(builders.delivery_for(started, ui=MLFLOW_UI))
    assert ref["root"] is True
    ramped = builders.notification_envelope(builders.traffic_ramped(model_name, endpoint))
    reply = slack_channel.deliver(builders.delivery_for(ramped, ui=MLFLOW_UI))
    assert reply["thread_ts"] == ref["ts"] and reply["root"] is False
    [root] = roots_about(slack_peer, model_name)
    assert root["ts"] == ref["ts"]
    assert root["blocks"][0]["text"]["text"] == f"{model_name} v2 ramped to 25% on {endpoint}"
    assert len(root["history"]) == 1  # updated in place once
    [answer] = slack_peer.replies(ref["ts"])
    assert "ramped to 25%" in answer["text"]


def test_slack_authenticates_with_the_bot_token(slack_peer, table, model_name):
    channel = SlackChannel(slack_client("xoxb-wrong", slack_peer.api_url), SLACK_CHANNEL,
                           SlackThreads(table))
    envelope = builders.notification_envelope(builders.canary_started(model_name, "e"))
    with pytest.raises(ChannelError, match="invalid_auth") as failed:
        channel.deliver(builders.delivery_for(envelope))
    assert failed.value.transient is False
    assert roots_about(slack_peer, model_name) == []
    # The failed attempt released its claim on the thread: the next one opens it.
    good = SlackChannel(slack_client(slack_peer.token, slack_peer.api_url), SLACK_CHANNEL,
                        SlackThreads(table))
    assert good.deliver(builders.delivery_for(envelope))["root"] is True


def test_slack_rejects_an_unknown_channel(slack_peer, slack_token, table, model_name):
    channel = SlackChannel(slack_client(slack_token, slack_peer.api_url), "#nowhere",
                           SlackThreads(table))
    envelope = builders.notification_envelope(builders.canary_started(model_name, "e"))
    with pytest.raises(ChannelError, match="channel_not_found"):
        channel.deliver(builders.delivery_for(envelope))


def test_slack_waits_out_a_rate_limit_as_retry_after_says(slack_channel, slack_peer, model_name):
    slack_peer.rate_limit(times=1, retry_after=1)
    before = len(slack_peer.calls("chat.postMessage"))
    envelope = builders.notification_envelope(builders.canary_started(model_name, "e"))
    slack_channel.deliver(builders.delivery_for(envelope))
    calls = slack_peer.calls("chat.postMessage")[before:]
    assert len(calls) == 2
    assert calls[1]["at"] - calls[0]["at"] >= 1.0
    assert len(roots_about(slack_peer, model_name)) == 1


def test_slack_that_stays_rate_limited_is_a_transient_failure(slack_channel, slack_peer,
                                                              model_name):
    slack_peer.rate_limit(times=10, retry_after=0)
    envelope = builders.notification_envelope(builders.canary_started(model_name, "e"))
    with pytest.raises(ChannelError, match="ratelimited") as failed:
        slack_channel.deliver(builders.delivery_for(envelope))
    assert failed.value.transient is True
    slack_peer.clear_faults()


def test_slack_retries_a_server_error(slack_channel, slack_peer, model_name):
    slack_peer.inject(503, times=1)
    envelope = builders.notification_envelope(builders.canary_started(model_name, "e"))
    assert slack_channel.deliver(builders.delivery_for(envelope))["root"] is True


# ---- PagerDuty (HTTPS) ----

def test_pagerduty_triggers_and_resolves_over_https(pagerduty_channel, pagerduty_peer,
                                                    model_name):
    endpoint = f"{model_name}-prod"
    requested = builders.notification_envelope(builders.rollback_requested(model_name, endpoint))
    ref = pagerduty_channel.deliver(builders.delivery_for(requested, ui=MLFLOW_UI))
    key = f"gatehouse/{model_name}/{endpoint}/rollback"
    assert ref == {"action": "trigger", "incident": key, "reason": "new incident"}
    [incident] = pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    assert incident["status"] == "triggered" and incident["severity"] == "error"
    sent = [e for e in pagerduty_peer.events if e.get("dedup_key") == key][0]
    assert sent["payload"]["source"] == endpoint and sent["payload"]["class"] == "rollback"
    assert sent["payload"]["custom_details"]["endpoint"] == endpoint
    assert sent["links"][0]["href"].startswith(MLFLOW_UI)
    completed = builders.notification_envelope(builders.rollback_completed(model_name, endpoint))
    assert pagerduty_channel.deliver(builders.delivery_for(completed))["action"] == "resolve"
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")[0]["status"] == "resolved"


def test_pagerduty_refuses_an_untrusted_certificate(pagerduty_peer, routing_key, table,
                                                    model_name):
    client = events_client(routing_key, pagerduty_peer.url, None, sleep_timer=0.01)
    channel = PagerDutyChannel(client, OpenIncidents(table))
    envelope = builders.notification_envelope(builders.rollback_requested(model_name, "e"))
    with pytest.raises(ChannelError, match="unreachable") as failed:
        channel.deliver(builders.delivery_for(envelope))
    assert failed.value.transient is True
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/") == []


def test_pagerduty_rejects_an_unknown_routing_key(pagerduty_peer, tls_files, table, model_name):
    client = events_client("x" * 32, pagerduty_peer.url, str(tls_files[0]), sleep_timer=0.01)
    envelope = builders.notification_envelope(builders.rollback_requested(model_name, "e"))
    with pytest.raises(ChannelError, match="answered 400") as failed:
        PagerDutyChannel(client, OpenIncidents(table)).deliver(builders.delivery_for(envelope))
    assert failed.value.transient is False


def test_pagerduty_retries_server_errors(pagerduty_channel, pagerduty_peer, model_name):
    pagerduty_peer.inject(502, times=2)
    envelope = builders.notification_envelope(builders.rollback_requested(model_name, "e"))
    assert pagerduty_channel.deliver(builders.delivery_for(envelope))["action"] == "trigger"
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")[0]["status"] == "triggered"


# ---- Teams ----

def test_teams_posts_an_adaptive_card_with_the_rollback_link(teams_peer, model_name, peers):
    channel = TeamsChannel(teams_peer.webhook_url, backoff=0.01)
    envelope = builders.notification_envelope(builders.rollback_requested(model_name, "e"))
    link = "https://gatehouse.example/api/rollouts/e/rollback?token=abc"
    assert channel.deliver(builders.delivery_for(envelope, ui=MLFLOW_UI,
                                                 rollback_url=link)) == {"status": 202}
    [card] = teams_peer.cards_about(model_name)
    actions = card["attachments"][0]["content"]["actions"]
    assert actions[0]["title"] == "Roll back" and actions[0]["url"] == link
    assert any(a["url"].startswith(MLFLOW_UI) for a in actions[1:])


def test_teams_with_a_wrong_signature_is_a_permanent_failure_that_names_no_secret(teams_peer,
                                                                                   model_name):
    url = teams_peer.webhook_url.replace(teams_peer.signature, "forged-signature-value")
    envelope = builders.notification_envelope(builders.rollback_requested(model_name, "e"))
    with pytest.raises(ChannelError) as failed:
        TeamsChannel(url, backoff=0.01).deliver(builders.delivery_for(envelope))
    assert str(failed.value) == "Teams webhook answered 401"
    assert failed.value.transient is False
    assert "forged" not in repr(TeamsChannel(url))


def test_teams_retries_throttling_and_server_errors(teams_peer, model_name, peers):
    teams_peer.inject(429, times=1, headers={"Retry-After": "1"})
    teams_peer.inject(500, times=1)
    before = len(teams_peer.requests)
    started = time.monotonic()
    envelope = builders.notification_envelope(builders.rollback_requested(model_name, "e"))
    assert TeamsChannel(teams_peer.webhook_url, backoff=0.01).deliver(
        builders.delivery_for(envelope))["status"] == 202
    assert len(teams_peer.requests) - before == 3
    assert time.monotonic() - started >= 1.0
    assert len(teams_peer.cards_about(model_name)) == 1


def test_teams_peer_rejects_a_malformed_card(teams_peer):
    import requests

    reply = requests.post(teams_peer.webhook_url, json={"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive",
         "content": {"type": "AdaptiveCard", "version": "1.4", "body": [{"type": "Marquee"}]}}]},
        timeout=5)
    assert reply.status_code == 400 and "Marquee" in json.dumps(reply.json())
