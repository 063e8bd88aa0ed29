"""Each (notification, channel) delivered once however the notify handler is cut short, and a
PagerDuty resolve never overtaking its trigger. The real clients against their local peers;
state on Azurite (the handler) or in memory (the PagerDuty channel on its own)."""

from __future__ import annotations

import json
import time

import pytest

from functions.notify import deliver_notification
from shared.channels.base import ChannelError
from shared.channels.dispatch import Dispatcher, NotificationState
from shared.channels.outbox import OutboxChannel
from shared.channels.pagerduty import OpenIncidents, PagerDutyChannel, events_client, incident_key
from shared.channels.policy import NotificationPolicy
from shared.foundation.failpoints import ENVIRONMENT, FailpointError
from shared.foundation.state import MemoryTable
from tests.notifications import builders
from tests.notifications.conftest import SLACK_CHANNEL

ALL_CHANNELS = '["outbox", "slack", "teams", "pagerduty"]'


@pytest.fixture
def every_channel(channel_env, storage_env, tmp_path, monkeypatch):
    """The notify handler with all four channels routed, state on Azurite."""
    from shared.policy import current_policy

    policy = tmp_path / "policy.toml"
    policy.write_text(f"[[defaults.notifications.routes]]\nchannels = {ALL_CHANNELS}\n")
    monkeypatch.setenv("GATEHOUSE_POLICY_PATH", str(policy))
    current_policy.cache_clear()
    yield channel_env
    current_policy.cache_clear()


def copies(peers, outbox_path, model_name: str, event_id: str) -> dict[str, int]:
    """How many copies of the notification each channel's target holds."""
    slack, pagerduty, teams = peers
    with slack.lock:
        slack_copies = sum(1 for m in slack.messages.values() if model_name in m["text"])
    return {"outbox": sum(1 for line in OutboxChannel(outbox_path).read()
                          if line["event_id"] == event_id),
            "slack": slack_copies, "teams": len(teams.cards_about(model_name)),
            "pagerduty": len(pagerduty.incidents_for(f"gatehouse/{model_name}/"))}


@pytest.mark.parametrize("point", ["notify.sent_outbox", "notify.sent_slack", "notify.sent_teams",
                                   "notify.sent_pagerduty", "notify.delivered"])
def test_a_notification_redone_after_a_crash_reaches_each_channel_once(every_channel, peers,
                                                                      monkeypatch, model_name,
                                                                      point):
    envelope = builders.notification_envelope(
        builders.rollback_requested(model_name, f"{model_name}-prod"))
    monkeypatch.setenv(ENVIRONMENT, f"{point}=raise")
    with pytest.raises(FailpointError):
        deliver_notification(envelope.to_json())
    monkeypatch.delenv(ENVIRONMENT)
    result = deliver_notification(envelope.to_json())  # the queue redelivers after the lease
    assert copies(peers, every_channel["GATEHOUSE_OUTBOX_PATH"], model_name, envelope.id) == {
        "outbox": 1, "slack": 1, "teams": 1, "pagerduty": 1}
    assert set(result["channels"]) == {"outbox", "slack", "teams", "pagerduty"}
    if point == "notify.sent_slack":  # found in the channel by its metadata, not sent again
        assert result["channels"]["slack"]["found"] is True
    if point == "notify.sent_teams":  # a webhook cannot be read back: not sent a second time
        assert result["channels"]["teams"]["unconfirmed"] is True
    # Once complete, a redelivery is answered from the idempotency record.
    assert deliver_notification(envelope.to_json()) == result


class CountingChannel:
    """A chat channel (in Teams' place) that counts what it is asked to send."""

    name = "teams"
    updates_in_place = False
    resends_safely = False

    def __init__(self):
        self.sent: list[str] = []

    def deliver(self, delivery) -> dict:
        self.sent.append(delivery.event_id)
        return {"ts": str(len(self.sent))}


def test_an_intent_without_an_outcome_is_not_sent_again(model_name):
    """The documented trade-off for chat channels: a host that died between recording its intent
    and the send loses that copy (at most once) rather than risking a second one."""
    chat = CountingChannel()
    state = NotificationState(MemoryTable())
    dispatcher = Dispatcher({"teams": chat}, state,
                            lambda model: NotificationPolicy.model_validate(
                                {"routes": [{"channels": ["teams"]}]}))
    died = builders.notification_envelope(builders.canary_started(model_name, "ep"))
    state.record_sending(died.id, "teams")
    result = dispatcher.deliver(died)
    assert chat.sent == [] and result["channels"]["teams"]["unconfirmed"] is True
    assert state.delivery(died.id, "teams")["status"] == "delivered"

    fine = builders.notification_envelope(builders.traffic_ramped(model_name, "ep"))
    dispatcher.deliver(fine)
    dispatcher.deliver(fine)
    assert chat.sent == [fine.id]
    assert state.delivery(fine.id, "teams")["status"] == "delivered"


# ---- Slack: an intent without an outcome is looked for in the channel ----

def slack_dispatcher(slack_peer, slack_token, table=None):
    from shared.channels.slack import SlackChannel, SlackThreads, slack_client

    table = table or MemoryTable()
    channel = SlackChannel(slack_client(slack_token, slack_peer.api_url, backoff=0.01),
                           SLACK_CHANNEL, SlackThreads(table))
    state = NotificationState(table)
    dispatcher = Dispatcher({"slack": channel}, state,
                            lambda model: NotificationPolicy.model_validate(
                                {"routes": [{"channels": ["slack"]}]}))
    return dispatcher, state


def slack_messages_about(slack_peer, model_name: str) -> list[dict]:
    with slack_peer.lock:
        return [m for m in slack_peer.messages.values() if model_name in m["text"]]


def test_a_slack_intent_whose_post_never_happened_is_sent_now(slack_peer, slack_token,
                                                              model_name):
    dispatcher, state = slack_dispatcher(slack_peer, slack_token)
    first = builders.notification_envelope(builders.canary_started(model_name, "ep"))
    dispatcher.deliver(first)  # the channel's ID is learned from this post
    died = builders.notification_envelope(builders.traffic_ramped(model_name, "ep"))
    state.record_sending(died.id, "slack")  # the host died before the post
    result = dispatcher.deliver(died)
    assert "unconfirmed" not in result["channels"]["slack"]
    messages = slack_messages_about(slack_peer, model_name)
    assert len(messages) == 2 and len([m for m in messages if m["thread_ts"]]) == 1


def test_a_slack_thread_head_posted_but_not_recorded_is_adopted_not_posted_again(
        slack_peer, slack_token, model_name, monkeypatch):
    from shared.channels.slack import SlackThreads

    table = MemoryTable()
    dispatcher, state = slack_dispatcher(slack_peer, slack_token, table)
    learned = builders.notification_envelope(builders.canary_started("channel-learner", "ep"))
    dispatcher.deliver(learned)  # another thread: the channel's ID is known from here on
    head = builders.notification_envelope(builders.canary_started(model_name, "ep"))

    def died(*args, **kwargs):
        raise SystemExit("host killed after the post")

    monkeypatch.setattr(SlackThreads, "opened", died)
    with pytest.raises(SystemExit):
        dispatcher.deliver(head)
    monkeypatch.undo()
    assert state.delivery(head.id, "slack")["status"] == "sending"

    redo = dispatcher.deliver(head)["channels"]["slack"]
    assert redo["found"] is True and redo["root"] is True
    later = builders.notification_envelope(builders.traffic_ramped(model_name, "ep"))
    reply = dispatcher.deliver(later)["channels"]["slack"]
    assert reply["thread_ts"] == redo["ts"]  # the adopted head carries the thread
    messages = slack_messages_about(slack_peer, model_name)
    assert len([m for m in messages if not m["thread_ts"]]) == 1 and len(messages) == 2


def test_without_the_history_scope_a_slack_redo_stays_at_most_once(slack_token, model_name):
    from tests.notifications.peers import SlackPeer

    peer = SlackPeer(slack_token, SLACK_CHANNEL, history_scope=False).start()
    try:
        dispatcher, state = slack_dispatcher(peer, slack_token)
        dispatcher.deliver(builders.notification_envelope(
            builders.canary_started(model_name, "ep")))
        died = builders.notification_envelope(builders.traffic_ramped(model_name, "ep"))
        state.record_sending(died.id, "slack")
        assert dispatcher.deliver(died)["channels"]["slack"]["unconfirmed"] is True
        assert len(slack_messages_about(peer, model_name)) == 1
    finally:
        peer.stop()


# ---- PagerDuty: per-incident ordering ----

@pytest.fixture
def pagerduty(pagerduty_peer, routing_key, tls_files, peers) -> PagerDutyChannel:
    client = events_client(routing_key, f"{pagerduty_peer.url}/v2/enqueue", str(tls_files[0]),
                           sleep_timer=0.01)
    return PagerDutyChannel(client, OpenIncidents(MemoryTable()))


def page(channel: PagerDutyChannel, envelope, now: float | None = None) -> dict:
    return channel.deliver(builders.delivery_for(envelope) if now is None else
                           _at(builders.delivery_for(envelope), now))


def _at(delivery, now: float):
    from dataclasses import replace

    return replace(delivery, now=now)


def alert_pair(model_name: str, kind: str = "error_rate"):
    """A critical alert firing and then resolving (in that order of occurrence)."""
    endpoint = f"{model_name}-prod"
    firing = builders.notification_envelope(builders.alert(
        model_name, kind, endpoint=endpoint, fingerprint=f"{model_name}-{kind}"))
    time.sleep(0.01)
    resolved = builders.notification_envelope(builders.alert(
        model_name, kind, endpoint=endpoint, fingerprint=f"{model_name}-{kind}",
        status="resolved"))
    return firing, resolved


def events_for(peer, key: str) -> list[str]:
    with peer.lock:
        return [e["event_action"] for e in peer.events if e.get("dedup_key") == key]


def test_a_resolve_that_overtakes_its_trigger_waits_for_it(pagerduty, pagerduty_peer,
                                                           model_name):
    firing, resolved = alert_pair(model_name)
    key = incident_key(firing.data)
    early = page(pagerduty, resolved)  # retries delivered the resolve first
    assert early["waiting_for_trigger"] == [key] and early["incidents"] == []
    assert events_for(pagerduty_peer, key) == []  # nothing to resolve at PagerDuty yet

    late = page(pagerduty, firing)
    assert late["action"] == "trigger" and late["resolved"] == [key]
    assert events_for(pagerduty_peer, key) == ["trigger", "resolve"]
    [incident] = pagerduty_peer.incidents_for(key)
    assert incident["status"] == "resolved"
    incidents, held = pagerduty.incidents.read(f"model:{model_name}")
    assert incidents == {} and held == {}

    # Nothing stays open in Gatehouse's record: the next critical alert pages.
    other, _ = alert_pair(model_name, "latency")
    assert page(pagerduty, other)["action"] == "trigger"
    # The old trigger delivered once more pages nobody: a later resolve was applied.
    assert page(pagerduty, firing)["action"] == "nothing"
    assert events_for(pagerduty_peer, key) == ["trigger", "resolve"]


def test_a_resolve_in_order_resolves_and_a_new_firing_pages_again(pagerduty, pagerduty_peer,
                                                                  model_name):
    firing, resolved = alert_pair(model_name)
    key = incident_key(firing.data)
    assert page(pagerduty, firing)["action"] == "trigger"
    assert page(pagerduty, resolved)["incidents"] == [key]
    assert page(pagerduty, resolved)["incidents"] == []  # again: resolved already, no waiting
    again, _ = alert_pair(model_name)  # the alert fires again later
    assert page(pagerduty, again)["action"] == "trigger"
    assert [i["status"] for i in pagerduty_peer.incidents_for(key)] == ["resolved", "triggered"]


def test_a_trigger_pagerduty_refused_is_not_recorded_open(pagerduty, pagerduty_peer, model_name):
    firing, _ = alert_pair(model_name)
    pagerduty_peer.inject(400, body=json.dumps({"status": "invalid event"}).encode())
    with pytest.raises(ChannelError):
        page(pagerduty, firing)
    assert pagerduty.incidents.read(f"model:{model_name}") == ({}, {})
    # So the next critical alert for the model is not suppressed as "already paged".
    other, _ = alert_pair(model_name, "latency")
    assert page(pagerduty, other)["action"] == "trigger"
    assert len(pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")) == 1


@pytest.mark.parametrize("point", ["pagerduty.triggered", "pagerduty.resolved"])
def test_a_late_trigger_cut_short_and_redone_opens_and_resolves_one_incident(
        pagerduty, pagerduty_peer, model_name, monkeypatch, point):
    firing, resolved = alert_pair(model_name)
    key = incident_key(firing.data)
    page(pagerduty, resolved)
    monkeypatch.setenv(ENVIRONMENT, f"{point}=raise")
    with pytest.raises(FailpointError):
        page(pagerduty, firing)
    monkeypatch.delenv(ENVIRONMENT)
    page(pagerduty, firing)  # redone from the start
    [incident] = pagerduty_peer.incidents_for(key)
    assert incident["status"] == "resolved"
    assert pagerduty.incidents.read(f"model:{model_name}") == ({}, {})
    assert page(pagerduty, firing)["action"] == "nothing"


def _cut_after_pagerduty_accepted(channel, envelope, monkeypatch) -> None:
    monkeypatch.setenv(ENVIRONMENT, "pagerduty.triggered=raise")
    with pytest.raises(FailpointError):
        page(channel, envelope)
    monkeypatch.delenv(ENVIRONMENT)


def test_a_trigger_cut_short_is_sent_again_even_when_a_storm_began_meanwhile(
        pagerduty, pagerduty_peer, model_name, monkeypatch):
    """The host died after PagerDuty accepted the trigger; on restart another page of the model
    went first. The retried trigger is not held as part of that storm: it is recorded open, so
    its alert's resolve reaches PagerDuty."""
    firing, resolved = alert_pair(model_name, "latency")
    key = incident_key(firing.data)
    _cut_after_pagerduty_accepted(pagerduty, firing, monkeypatch)
    assert [i["status"] for i in pagerduty_peer.incidents_for(key)] == ["triggered"]

    rollback = builders.notification_envelope(builders.rollback_requested(
        model_name, f"{model_name}-prod"))
    assert page(pagerduty, rollback)["action"] == "trigger"  # the storm's first page
    retried = page(pagerduty, firing)
    assert retried["action"] == "trigger" and "not recorded" in retried["reason"]
    assert key in pagerduty.incidents.read(f"model:{model_name}")[0]
    assert page(pagerduty, resolved)["incidents"] == [key]
    [incident] = pagerduty_peer.incidents_for(key)
    assert incident["status"] == "resolved"


def test_a_resolve_after_a_trigger_cut_short_resolves_it_and_the_retry_pages_nobody(
        pagerduty, pagerduty_peer, model_name, monkeypatch):
    firing, resolved = alert_pair(model_name, "latency")
    key = incident_key(firing.data)
    _cut_after_pagerduty_accepted(pagerduty, firing, monkeypatch)
    assert page(pagerduty, resolved)["incidents"] == [key]  # the intent counts as open
    assert page(pagerduty, firing)["action"] == "nothing"
    assert events_for(pagerduty_peer, key) == ["trigger", "resolve"]
    [incident] = pagerduty_peer.incidents_for(key)
    assert incident["status"] == "resolved"
    assert pagerduty.incidents.state(f"model:{model_name}").triggering == {}


def test_a_trigger_refused_before_pagerduty_saw_it_resolves_as_a_no_op(
        pagerduty, pagerduty_peer, model_name, monkeypatch):
    """A crash between recording the intent and sending: the resolve is sent for an incident
    PagerDuty never opened (a no-op there) and nothing stays recorded."""
    firing, resolved = alert_pair(model_name, "latency")
    key = incident_key(firing.data)
    pagerduty_peer.inject(400, body=json.dumps({"status": "invalid event"}).encode())
    with pytest.raises(ChannelError):
        page(pagerduty, firing)
    assert pagerduty_peer.incidents_for(key) == []
    page(pagerduty, resolved)
    assert pagerduty_peer.incidents_for(key) == []
    assert pagerduty.incidents.read(f"model:{model_name}") == ({}, {})


@pytest.mark.parametrize("point", ["pagerduty.triggered", "pagerduty.resolved",
                                   "pagerduty.storm_paged"])
def test_a_storm_cut_short_and_redone_pages_each_incident_once(pagerduty, pagerduty_peer,
                                                               model_name, monkeypatch, point):
    storm, storm_resolved = alert_pair(model_name, "error_rate")
    drift, _ = alert_pair(model_name, "feature_drift")
    now = time.time()

    def redo(envelope, at):
        if point == "pagerduty.triggered" and envelope is not storm:
            return page(pagerduty, envelope, at)
        monkeypatch.setenv(ENVIRONMENT, f"{point}=raise")
        try:
            page(pagerduty, envelope, at)
        except FailpointError:
            pass
        monkeypatch.delenv(ENVIRONMENT)
        return page(pagerduty, envelope, at)

    assert redo(storm, now)["action"] in ("trigger", "suppress")
    assert page(pagerduty, drift, now + 5)["held"] is True
    ended = redo(storm_resolved, now + 10)
    opened_at_pagerduty = pagerduty_peer.incidents_for(f"gatehouse/{model_name}/")
    incidents = {i["dedup_key"].rsplit("/", 1)[1]: i for i in opened_at_pagerduty}
    assert len(opened_at_pagerduty) == 2 and set(incidents) == {"error_rate", "feature_drift"}
    assert incidents["error_rate"]["status"] == "resolved"
    assert incidents["feature_drift"]["status"] == "triggered"
    assert incidents["feature_drift"]["summary"].startswith("Still firing after an alert storm")
    opened, held = pagerduty.incidents.read(f"model:{model_name}")
    assert set(opened) == {incident_key(drift.data)} and held == {}
    assert "paged_after_storm" in ended or point == "pagerduty.storm_paged"
