"""Delivering to several channels on Azurite: dedup under repeats, storms page once, a failing
channel neither blocks the others nor gets lost, redeliveries never re-post, no secret leaks."""

from __future__ import annotations

import json
import logging
import time

import azure.functions as func
import pytest

from functions.notify import deliver_notification, notify
from functions.slack_actions import slack_actions
from shared.channels.dispatch import STATE_TABLE, DeliveryIncomplete, Dispatcher
from shared.channels.factory import ChannelSettings, build_dispatcher
from shared.channels.policy import NotificationPolicy
from shared.events import Envelope
from shared.foundation import runtime
from shared.foundation.idempotency import COMPLETED, IdempotencyStore
from shared.foundation.state import StateTable
from tests.notifications import builders


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def dispatcher(channel_env, storage, clock, policy: NotificationPolicy) -> Dispatcher:
    built = build_dispatcher(ChannelSettings.from_settings(runtime.settings()), storage,
                             channel_env["GATEHOUSE_OUTBOX_PATH"], policy_for=lambda _: policy)
    built.clock = clock
    return built


def slack_messages_about(slack_peer, text: str) -> list[dict]:
    with slack_peer.lock:
        return [m for m in slack_peer.messages.values() if text in m["text"]]


def test_identical_notifications_collapse_into_one_message_per_channel(
        channel_env, storage, clock, peers, model_name):
    slack_peer, pagerduty_peer, teams_peer = peers
    send = dispatcher(channel_env, storage, clock, NotificationPolicy(dedup_window_seconds=60))
    same_alert = [builders.notification_envelope(
        builders.alert(model_name, endpoint=f"{model_name}-prod", fingerprint=f"{model_name}-fp"))
        for _ in range(4)]
    assert len({e.id for e in same_alert}) == 4 and len({e.data.dedup_key for e in same_alert}) == 1
    results = []
    for envelope in same_alert:
        results.append(send.deliver(envelope))
        clock.now += 10
    assert [r.get("seen") for r in results] == [None, 2, 3, 4]
    [message] = slack_messages_about(slack_peer, model_name)
    assert len(message["history"]) == 3  # updated in place, not re-posted
    assert "seen 4 times" in json.dumps(message["blocks"])
    [incident] = pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    assert incident["triggers"] == 1
    assert len(teams_peer.cards_about(model_name)) == 1

    # The queue redelivering one of them changes nothing anywhere.
    assert send.deliver(same_alert[0])["channels"]["slack"]["already"] is True
    send.deliver(same_alert[2])
    assert len(slack_messages_about(slack_peer, model_name)) == 1
    assert len(message["history"]) == 3 and len(teams_peer.cards_about(model_name)) == 1

    # After the window the same alert is news again: a new message in its thread.
    clock.now += 120
    send.deliver(builders.notification_envelope(
        builders.alert(model_name, endpoint=f"{model_name}-prod", fingerprint=f"{model_name}-fp")))
    messages = slack_messages_about(slack_peer, model_name)
    assert len(messages) == 2 and messages[1]["thread_ts"] == messages[0]["ts"]
    assert len(teams_peer.cards_about(model_name)) == 2
    assert len(pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")) == 1  # still open


def test_an_alert_storm_pages_once_and_the_rollback_resolves_it(channel_env, storage, clock,
                                                                peers, model_name):
    slack_peer, pagerduty_peer, _ = peers
    send = dispatcher(channel_env, storage, clock, NotificationPolicy())
    endpoint = f"{model_name}-prod"
    kinds = ["error_rate", "latency", "performance_drift", "prediction_shift", "feature_drift"]
    actions = []
    for i in range(15):
        result = send.deliver(builders.notification_envelope(builders.alert(
            model_name, kinds[i % len(kinds)], endpoint=endpoint, fingerprint=f"{model_name}-{i}")))
        actions.append(result["channels"]["pagerduty"]["action"])
        clock.now += 5
    assert actions.count("trigger") == 1 and actions.count("suppress") == 14
    [incident] = pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    assert incident["status"] == "triggered"
    assert len(slack_messages_about(slack_peer, model_name)) == 15  # people still see each one

    send.deliver(builders.notification_envelope(builders.rollback_completed(model_name, endpoint)))
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")[0]["status"] == "resolved"
    clock.now += 5
    send.deliver(builders.notification_envelope(builders.alert(
        model_name, "latency", endpoint=endpoint, fingerprint=f"{model_name}-after")))
    assert [i["status"] for i in pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")] == \
        ["resolved", "triggered"]


def test_a_manual_rollback_pages_nobody_and_resolves_nothing(channel_env, storage, clock, peers,
                                                            model_name):
    from shared.channels.outbox import OutboxChannel
    from shared.channels.policy import Route
    from shared.events import Decision

    slack_peer, pagerduty_peer, teams_peer = peers
    send = dispatcher(channel_env, storage, clock, NotificationPolicy(routes=[Route(
        channels=["outbox", "slack", "teams", "pagerduty"])]))
    endpoint, person = f"{model_name}-prod", "alice@example.com"
    send.deliver(builders.notification_envelope(builders.canary_started(model_name, endpoint)))
    requested = send.deliver(builders.notification_envelope(builders.rollback_requested(
        model_name, endpoint, decision=Decision(actor=person, reason="looks wrong"))))
    completed = send.deliver(builders.notification_envelope(
        builders.rollback_completed(model_name, endpoint, actor=person)))
    assert "pagerduty" not in requested["channels"]
    assert completed["channels"]["pagerduty"]["action"] == "nothing"
    assert [e for e in pagerduty_peer.events
            if e["dedup_key"].startswith(f"gatehouse/{model_name}/")] == []
    lines = [line for line in OutboxChannel(channel_env["GATEHOUSE_OUTBOX_PATH"]).read()
             if line.get("model_name") == model_name]
    assert [line.get("page") for line in lines] == [None, None, None]
    # The outbox carries the links the chat channels show.
    card = teams_peer.cards_about(model_name)[0]["attachments"][0]["content"]
    assert {a["url"] for a in card["actions"]} == set(lines[0]["links"].values()) != set()
    assert lines[0]["links"]["model"].endswith(f"/#/models/{model_name}/versions/2")


def test_alerts_held_by_a_storm_page_once_it_ends_if_they_still_fire(channel_env, storage, clock,
                                                                      peers, model_name):
    _, pagerduty_peer, _ = peers
    send = dispatcher(channel_env, storage, clock, NotificationPolicy())
    endpoint = f"{model_name}-prod"

    def alert(kind, status="firing", version=None):
        result = send.deliver(builders.notification_envelope(builders.alert(
            model_name, kind, endpoint=endpoint, fingerprint=f"{model_name}-{kind}",
            status=status, version=version)))
        clock.now += 5
        return result["channels"]["pagerduty"]

    assert alert("error_rate")["action"] == "trigger"
    assert alert("latency")["held"] is True
    assert alert("feature_drift")["held"] is True
    assert alert("prediction_shift", version="7")["held"] is True
    alert("latency", status="resolved")  # resolved while held: nobody needs paging for it

    # The storm's incident resolves; drift still fires, so on-call hears about it now.
    ended = alert("error_rate", status="resolved")
    assert ended["paged_after_storm"] == {"incident": f"gatehouse/{model_name}/{endpoint}/"
                                                      f"feature_drift", "alerts": 2}
    incidents = {i["dedup_key"].rsplit("/", 1)[1]: i
                 for i in pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")}
    assert incidents["error_rate"]["status"] == "resolved"
    assert incidents["feature_drift"]["status"] == "triggered"
    assert incidents["feature_drift"]["summary"].startswith("Still firing after an alert storm")
    assert set(incidents) == {"error_rate", "feature_drift"}
    [page] = [e for e in pagerduty_peer.events if e["event_action"] == "trigger"
              and e["dedup_key"].endswith("feature_drift")]
    assert page["payload"]["custom_details"]["also_still_firing"] == [
        f"Critical: {model_name}: prediction_shift above threshold"]

    # A rollback of v7 later settles that incident; nothing is left held to page again.
    result = send.deliver(builders.notification_envelope(
        builders.rollback_completed(model_name, endpoint, version="7")))
    assert "paged_after_storm" not in result["channels"]["pagerduty"]
    assert all(i["status"] == "resolved"
               for i in pagerduty_peer.incidents_for(f"gatehouse/{model_name}/"))


def test_a_failing_channel_does_not_block_the_others_and_is_recorded(channel_env, storage_env,
                                                                     peers, model_name):
    slack_peer, pagerduty_peer, teams_peer = peers
    teams_peer.inject(500, times=100)
    envelope = builders.notification_envelope(
        builders.rollback_requested(model_name, f"{model_name}-prod"))
    with pytest.raises(DeliveryIncomplete, match="teams failed"):
        notify(func.QueueMessage(body=envelope.to_json().encode()))
    assert len(slack_messages_about(slack_peer, model_name)) == 1
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")[0]["status"] == "triggered"
    state = build_dispatcher(ChannelSettings.from_settings(runtime.settings()), storage_env,
                             channel_env["GATEHOUSE_OUTBOX_PATH"]).state
    [failure] = [f for f in state.failures() if f["event_id"] == envelope.id]
    assert failure["channel"] == "teams" and failure["error"] == "Teams webhook answered 500"
    assert failure["transient"] is True and failure["attempts"] == 1
    assert Envelope.from_json(failure["envelope"]) == envelope  # kept whole for a replay
    store = IdempotencyStore.connect(storage_env)
    assert store.status("notify", envelope.id) is None  # released: the queue will redeliver

    # The redelivery, once Teams is back, goes to Teams only.
    teams_peer.clear_faults()
    posts, pd_events = len(slack_peer.calls("chat.postMessage")), len(pagerduty_peer.events)
    notify(func.QueueMessage(body=envelope.to_json().encode()))
    assert len(teams_peer.cards_about(model_name)) == 1
    assert len(slack_peer.calls("chat.postMessage")) == posts
    assert len(pagerduty_peer.events) == pd_events
    assert not [f for f in state.failures() if f["event_id"] == envelope.id]
    assert store.status("notify", envelope.id) == COMPLETED


def test_a_permanent_failure_is_recorded_and_not_retried(channel_env, storage_env, monkeypatch,
                                                         peers, model_name):
    slack_peer, pagerduty_peer, teams_peer = peers
    monkeypatch.setenv("SLACK_CHANNEL", "#no-such-channel")
    envelope = builders.notification_envelope(
        builders.rollback_requested(model_name, f"{model_name}-prod"))
    result = deliver_notification(envelope.to_json())
    assert result["channels"]["slack"] == {"failed": "Slack chat.postMessage failed: "
                                                     "channel_not_found", "transient": False}
    assert len(teams_peer.cards_about(model_name)) == 1
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    state = build_dispatcher(ChannelSettings.from_settings(runtime.settings()), storage_env,
                             channel_env["GATEHOUSE_OUTBOX_PATH"]).state
    assert [f["channel"] for f in state.failures() if f["event_id"] == envelope.id] == ["slack"]


def test_with_nothing_configured_only_the_outbox_hears(storage_env, monkeypatch, tmp_path, peers,
                                                       model_name):
    from shared.channels.outbox import OutboxChannel

    outbox = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("GATEHOUSE_OUTBOX_PATH", str(outbox))
    for name in ("SLACK_BOT_TOKEN", "TEAMS_WEBHOOK_URL", "PAGERDUTY_ROUTING_KEY"):
        monkeypatch.delenv(name, raising=False)
    slack_peer, pagerduty_peer, teams_peer = peers
    envelope = builders.notification_envelope(
        builders.rollback_requested(model_name, f"{model_name}-prod"))
    result = deliver_notification(envelope.to_json())
    assert list(result["channels"]) == ["outbox"]
    [line] = OutboxChannel(outbox).read()
    assert line["event_id"] == envelope.id and line["title"].startswith("Rollback requested")
    assert line["page"] == "trigger", "the outbox shows what would have paged on-call"
    assert slack_messages_about(slack_peer, model_name) == []
    assert teams_peer.cards_about(model_name) == []
    assert pagerduty_peer.incidents_for(f"gatehouse/{model_name}/") == []

    deliver_notification(builders.notification_envelope(
        builders.rollback_completed(model_name, f"{model_name}-prod")).to_json())
    deliver_notification(builders.notification_envelope(
        builders.canary_started(model_name, f"{model_name}-prod")).to_json())
    _, resolved, started = OutboxChannel(outbox).read()
    assert resolved["page"] == "resolve"
    assert "page" not in started


def test_secrets_never_reach_logs_the_outbox_or_the_state_table(
        channel_env, storage_env, peers, caplog, tmp_path, monkeypatch, model_name):
    slack_peer, pagerduty_peer, teams_peer = peers
    policy = tmp_path / "policy.toml"
    policy.write_text('[[defaults.notifications.routes]]\nchannels = ["outbox", "slack", '
                      '"teams", "pagerduty"]\n')
    monkeypatch.setenv("GATEHOUSE_POLICY_PATH", str(policy))
    from shared.policy import current_policy

    current_policy.cache_clear()
    caplog.set_level(logging.DEBUG)
    try:
        endpoint = f"{model_name}-prod"
        teams_peer.inject(500, times=100)
        slack_peer.rate_limit(times=1, retry_after=0)
        failing = builders.notification_envelope(builders.rollback_requested(model_name, endpoint))
        with pytest.raises(DeliveryIncomplete):
            deliver_notification(failing.to_json())
        teams_peer.clear_faults()
        deliver_notification(failing.to_json())
        deliver_notification(builders.notification_envelope(
            builders.rollback_completed(model_name, endpoint)).to_json())
        body, headers = builders.signed_slack_request("not-the-secret", {"type": "block_actions"})
        assert slack_actions(func.HttpRequest("POST", "/api/slack/actions", body=body,
                                              headers=headers)).status_code == 401
    finally:
        current_policy.cache_clear()

    settings = ChannelSettings.from_settings(runtime.settings())
    secrets = settings.secrets()
    assert settings.teams_webhook_url in secrets and len(secrets) >= 5
    debug_lines = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug_lines, "the libraries' debug logging was captured"
    outbox_text = (tmp_path / "outbox.jsonl").read_text()
    assert model_name in outbox_text
    rows = []
    for table, partitions in ((STATE_TABLE, ("delivery", "dedup", "slack-thread", "pagerduty")),
                              ("gatehouseidempotency", ("notify",))):
        state = StateTable(storage_env, table)
        for partition in partitions:
            rows.extend(getattr(row, "properties", row) for row in state.rows(partition))
    stored = json.dumps(rows, default=str)
    assert model_name in stored
    for secret in secrets:
        assert secret not in caplog.text, "a secret reached the log"
        assert secret not in outbox_text, "a secret reached the outbox"
        assert secret not in stored, "a secret reached the state table"
