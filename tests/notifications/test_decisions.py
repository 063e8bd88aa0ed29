"""The pure parts: what is announced and how, routing, repeats, paging plans, message shapes."""

from __future__ import annotations

import json
import time

import pytest

from shared import events
from shared.channels import dispatch, pagerduty, slack, teams
from shared.channels.base import Delivery, Repeat, RollbackTarget, page_intent, rollback_paged
from shared.channels.dispatch import RepeatVerdict, judge_repeat, route_channels
from shared.channels.factory import ChannelSettings
from shared.channels.messages import notification_for
from shared.channels.policy import NotificationPolicy, Route
from shared.channels.redaction import make_redactor
from shared.events import Decision, Envelope
from shared.foundation.settings import Settings
from shared.policy import Policy, PolicyError
from tests.notifications import builders
from tests.notifications.peers import block_problems, card_problems

ALL = {"outbox", "slack", "teams", "pagerduty"}
MODEL, ENDPOINT = "fraud", "fraud-prod"


def note_of(payload) -> events.NotificationRequested:
    return builders.notification_envelope(payload).data


def delivery_of(payload, ui: str | None = "http://mlflow.local", **extra) -> Delivery:
    note = note_of(payload)
    return Delivery(event_id="e1", note=note, policy=NotificationPolicy(),
                    links=dispatch.mlflow_links(note, ui), rollback=dispatch.rollback_target(note),
                    now=time.time(), **extra)


# ---- what is announced ----

def test_registry_titles_are_unchanged():
    event = Envelope.wrap(events.ModelVersionCreated(model_name="m", version="1"), source="/s")
    assert notification_for(event).title == "m v1 registered"
    alias = Envelope.wrap(events.ModelVersionAliasCreated(model_name="m", alias="champion",
                                                          version="1"), source="/s")
    assert "@champion" in notification_for(alias).title
    tag = Envelope.wrap(events.ModelVersionTagSet(model_name="m", version="1", tags={"a": "b"}),
                        source="/s")
    assert notification_for(tag) is None


def test_gate_results_carry_key_figures_and_the_report():
    gates = [events.GateOutcome(name="ece", status="fail", observed=0.031, threshold=0.02),
             events.GateOutcome(name="auc", status="pass", observed=0.91, threshold=0.85)]
    note = note_of(events.GatesFailed(
        model_name=MODEL, version="3", report_run_id="run123", gates=gates,
        decision=Decision(actor="gatehouse", reason="ECE too high", metrics={"ece": 0.031})))
    assert note.title == "fraud v3 failed its gates" and note.severity == "warning"
    assert "ece fail (0.031 vs 0.02)" in note.text and "1 fail, 1 pass" in note.text
    assert note.facts["ece"] == "0.031" and note.facts["report_run_id"] == "run123"
    links = dispatch.mlflow_links(note, "http://mlflow.local/")
    assert links["report"] == "http://mlflow.local/#/runs/run123"
    assert links["model"] == "http://mlflow.local/#/models/fraud/versions/3"
    assert "run_uuid=run123" in links["reliability diagram"]
    passed = note_of(events.GatesPassed(model_name=MODEL, version="3", gates=gates[1:],
                                        decision=Decision(actor="gatehouse", reason="ok")))
    assert passed.title == "fraud v3 passed its gates" and passed.severity == "info"


@pytest.mark.parametrize("payload,title,severity", [
    (builders.canary_started(MODEL, ENDPOINT), "fraud v2 canary at 5% on fraud-prod", "info"),
    (builders.traffic_ramped(MODEL, ENDPOINT), "fraud v2 ramped to 25% on fraud-prod", "info"),
    (events.ModelPromoted(model_name=MODEL, version="2", endpoint=ENDPOINT,
                          previous_champion="1", decision=Decision(actor="gatehouse", reason="ok")),
     "fraud v2 promoted to @champion", "info"),
    (builders.rollback_requested(MODEL, ENDPOINT),
     "Rollback requested: fraud v2 on fraud-prod", "error"),
    (builders.rollback_requested(MODEL, ENDPOINT, decision=Decision(actor="slack:U1/alice",
                                                                    reason="clicked")),
     "Rollback requested: fraud v2 on fraud-prod", "warning"),
    (builders.rollback_completed(MODEL, ENDPOINT), "Rolled back: fraud v2 on fraud-prod", "info"),
    (builders.stalled(MODEL, ENDPOINT), "Rollout stalled: fraud v2 at 5% on fraud-prod",
     "warning"),
    (builders.alert(MODEL), "Critical: fraud: error_rate above threshold", "critical"),
    (builders.alert(MODEL, status="resolved"), "Resolved: fraud: error_rate above threshold",
     "info"),
    (events.RetrainingTriggered(model_name=MODEL, reason="feature drift", job_run_id="42",
                                decision=Decision(actor="gatehouse", reason="drift")),
     "Retraining fraud", "info"),
])
def test_internal_events_are_announced(payload, title, severity):
    note = note_of(payload)
    assert (note.title, note.severity) == (title, severity)
    assert note.text and note.facts["occurred"]


def test_a_stall_says_how_long_a_decision_needs_and_what_the_policy_does():
    held = note_of(builders.stalled(MODEL, ENDPOINT))
    assert "about 2.0 h more" in held.text and "keeps holding" in held.text
    assert held.facts["challenger requests/min"] == "0.5"
    unknown = note_of(builders.stalled(MODEL, ENDPOINT, eta=None, on_stall="abort"))
    assert "no estimate" in unknown.text and "rolled back" in unknown.text


def test_human_rollbacks_name_the_person_and_automatic_ones_the_judge():
    human = note_of(builders.rollback_requested(
        MODEL, ENDPOINT, decision=Decision(actor="slack:U1/alice", reason="looks wrong")))
    assert human.text.startswith("slack:U1/alice asked to roll back")
    auto = note_of(builders.rollback_requested(MODEL, ENDPOINT))
    assert auto.text.startswith("Gatehouse asked") and auto.facts["error_rate"] == "0.041"


# ---- routing ----

def test_default_routes_send_everything_to_slack_and_warnings_to_teams():
    policy = NotificationPolicy()
    assert route_channels(note_of(builders.canary_started(MODEL, ENDPOINT)), policy, ALL) == \
        ["slack"]
    assert route_channels(note_of(builders.rollback_requested(MODEL, ENDPOINT)), policy, ALL) == \
        ["slack", "teams", "pagerduty"]
    assert route_channels(note_of(builders.rollback_completed(MODEL, ENDPOINT)), policy, ALL) == \
        ["slack", "pagerduty"]


def test_nothing_configured_means_the_outbox():
    policy = NotificationPolicy()
    assert route_channels(note_of(builders.rollback_requested(MODEL, ENDPOINT)), policy,
                          {"outbox"}) == ["outbox"]


def test_routes_by_event_severity_and_model_from_the_policy_file():
    policy = Policy({
        "defaults": {"notifications": {"routes": [
            {"events": ["rollout.*"], "channels": ["slack"]},
            {"events": ["monitoring.alert"], "min_severity": "error", "channels": ["teams"]}]}},
        "models": {"fraud": {"notifications": {"routes": [
            {"models": ["fr*"], "channels": ["outbox", "teams"]}]}}}})
    other = policy.for_model("churn").notifications
    assert route_channels(note_of(builders.canary_started("churn", "e")), other, ALL) == ["slack"]
    assert route_channels(note_of(builders.alert("churn", severity="warning")), other, ALL) == \
        ["outbox"]  # matched no route: still recorded, never dropped
    assert route_channels(note_of(builders.alert("churn", severity="error")), other, ALL) == \
        ["teams"]
    fraud = policy.for_model("fraud").notifications
    assert route_channels(note_of(builders.canary_started("fraud", "e")), fraud, ALL) == \
        ["outbox", "teams"]


def test_a_bad_routing_section_is_a_clear_policy_error():
    with pytest.raises(PolicyError, match="notifications.routes.0.channels"):
        Policy({"defaults": {"notifications": {"routes": [{"channels": ["email"]}]}}})
    with pytest.raises(PolicyError, match="dedup_window_seconds"):
        Policy({"defaults": {"notifications": {"dedup_window_seconds": -1}}})
    with pytest.raises(PolicyError, match="routes.0.channels"):
        Policy({"defaults": {"notifications": {"routes": [{"events": ["*"]}]}}})


def test_page_intent_follows_severity_and_resolution():
    policy = NotificationPolicy()
    assert page_intent(note_of(builders.rollback_requested(MODEL, ENDPOINT)), policy) == "trigger"
    assert page_intent(note_of(builders.rollback_completed(MODEL, ENDPOINT)), policy) == "resolve"
    assert page_intent(note_of(builders.alert(MODEL, status="resolved")), policy) == "resolve"
    assert page_intent(note_of(builders.alert(MODEL, severity="warning")), policy) is None
    assert page_intent(note_of(builders.canary_started(MODEL, ENDPOINT)), policy) is None
    lenient = NotificationPolicy(page_min_severity="warning")
    assert page_intent(note_of(builders.alert(MODEL, severity="warning")), lenient) == "trigger"
    assert route_channels(note_of(builders.alert(MODEL, severity="warning")),
                          NotificationPolicy(routes=[Route(channels=["pagerduty"])]),
                          ALL) == ["outbox"]


# ---- repeats ----

def test_judge_repeat():
    record = {"event_id": "a", "first_seen": 100.0, "repeat_ids": json.dumps(["b"])}
    assert judge_repeat(None, "a", 100, 60) is RepeatVerdict.ORIGINAL
    assert judge_repeat(record, "a", 1000, 60) is RepeatVerdict.ORIGINAL_AGAIN
    assert judge_repeat(record, "b", 120, 60) is RepeatVerdict.REPEAT_AGAIN
    assert judge_repeat(record, "c", 159, 60) is RepeatVerdict.REPEAT
    assert judge_repeat(record, "c", 160, 60) is RepeatVerdict.ORIGINAL
    assert judge_repeat(record, "c", 100, 0) is RepeatVerdict.ORIGINAL


def test_identical_events_share_a_dedup_key_and_different_ones_do_not():
    first = note_of(builders.alert(MODEL, fingerprint="x"))
    again = note_of(builders.alert(MODEL, fingerprint="x"))
    other = note_of(builders.alert(MODEL, fingerprint="y"))
    resolved = note_of(builders.alert(MODEL, fingerprint="x", status="resolved"))
    assert first.dedup_key == again.dedup_key
    assert len({first.dedup_key, other.dedup_key, resolved.dedup_key}) == 3
    ramp = note_of(builders.traffic_ramped(MODEL, ENDPOINT))
    assert ramp.dedup_key != note_of(events.TrafficRamped(
        model_name=MODEL, version="2", endpoint=ENDPOINT, from_percent=25, to_percent=50,
        decision=Decision(actor="gatehouse", reason="ok"))).dedup_key


def test_a_version_keeps_one_thread_and_an_alert_resolves_under_its_own():
    keys = {slack.thread_key(note_of(p)) for p in (
        builders.canary_started(MODEL, ENDPOINT), builders.rollback_requested(MODEL, ENDPOINT),
        builders.rollback_completed(MODEL, ENDPOINT),
        builders.alert(MODEL, endpoint=ENDPOINT, version="2"))}
    assert keys == {"fraud/2"}
    assert slack.thread_key(note_of(builders.alert(MODEL, fingerprint="z"))) == \
        slack.thread_key(note_of(builders.alert(MODEL, fingerprint="z", status="resolved")))


def test_rollback_is_offered_only_while_a_version_serves():
    assert dispatch.rollback_target(note_of(builders.canary_started(MODEL, ENDPOINT))) == \
        RollbackTarget(MODEL, "2", ENDPOINT)
    assert dispatch.rollback_target(note_of(builders.rollback_completed(MODEL, ENDPOINT))) is None
    assert dispatch.rollback_target(note_of(builders.alert(MODEL, endpoint=ENDPOINT))) is None
    assert dispatch.rollback_target(note_of(builders.alert(
        MODEL, endpoint=ENDPOINT, version="2", status="resolved"))) is None


# ---- paging plans ----

def test_plan_page_triggers_once_per_storm_and_resolves_on_rollback():
    first = note_of(builders.alert(MODEL, "error_rate", endpoint=ENDPOINT))
    second = note_of(builders.alert(MODEL, "latency", endpoint=ENDPOINT, fingerprint="fp-2"))
    plan = pagerduty.plan_page(first, "trigger", {}, 1000, 3600)
    assert plan.action == "trigger" and plan.key == "gatehouse/fraud/fraud-prod/error_rate"
    opened = {plan.key: pagerduty.OpenIncident(plan.key, 1000, ENDPOINT)}
    assert pagerduty.plan_page(first, "trigger", opened, 1010, 3600).action == "suppress"
    storm = pagerduty.plan_page(second, "trigger", opened, 1010, 3600)
    assert storm.action == "suppress" and "storm" in storm.reason
    assert pagerduty.plan_page(second, "trigger", opened, 1000 + 3600, 3600).action == "trigger"
    done = pagerduty.plan_page(note_of(builders.rollback_completed(MODEL, ENDPOINT)), "resolve",
                               opened, 1020, 3600)
    assert done.action == "resolve"
    assert set(done.resolve_keys) == {"gatehouse/fraud/fraud-prod/rollback", plan.key}
    elsewhere = {"k": pagerduty.OpenIncident("k", 1000, "other-endpoint")}
    assert "k" not in pagerduty.plan_page(note_of(builders.rollback_completed(MODEL, ENDPOINT)),
                                          "resolve", elsewhere, 1020, 3600).resolve_keys


def test_a_manual_rollback_resolves_no_page_of_its_own():
    by_hand = note_of(builders.rollback_completed(MODEL, ENDPOINT, actor="alice@example.com"))
    policy = NotificationPolicy()
    assert not rollback_paged(by_hand, policy)
    assert rollback_paged(by_hand, NotificationPolicy(page_min_severity="warning"))
    assert rollback_paged(note_of(builders.rollback_completed(MODEL, ENDPOINT)), policy)
    assert rollback_paged(note_of(builders.alert(MODEL, status="resolved")),
                          NotificationPolicy(page_min_severity="critical"))
    nothing_open = pagerduty.plan_page(by_hand, "resolve", {}, 1020, 3600, rollback_paged=False)
    assert nothing_open.action == "nothing" and nothing_open.resolve_keys == ()
    alert_key = "gatehouse/fraud/fraud-prod/error_rate"
    opened = {alert_key: pagerduty.OpenIncident(alert_key, 1000, ENDPOINT)}
    settles = pagerduty.plan_page(by_hand, "resolve", opened, 1020, 3600, rollback_paged=False)
    assert settles.action == "resolve" and settles.resolve_keys == (alert_key,)


def test_outbox_lines_carry_the_links_the_chat_channels_show(tmp_path):
    from shared.channels.outbox import OutboxChannel

    delivery = delivery_of(builders.canary_started(MODEL, ENDPOINT),
                           rollback_url="https://gatehouse.test.invalid/api/rollback?t=x")
    outbox = OutboxChannel(tmp_path / "outbox.jsonl")
    outbox.deliver(delivery)
    [line] = outbox.read()
    assert line["links"] == {"model": "http://mlflow.local/#/models/fraud/versions/2",
                             "roll back": "https://gatehouse.test.invalid/api/rollback?t=x"}
    assert line["links"]["roll back"] in str(teams.adaptive_card(delivery))


def test_a_storm_holds_other_alerts_and_pages_those_still_firing_once_it_ends():
    first = note_of(builders.alert(MODEL, "error_rate", endpoint=ENDPOINT))
    opened = {"gatehouse/fraud/fraud-prod/error_rate": pagerduty.OpenIncident(
        "gatehouse/fraud/fraud-prod/error_rate", 1000, ENDPOINT)}
    assert pagerduty.plan_page(first, "trigger", opened, 1010, 3600).hold is False  # same alert
    latency = note_of(builders.alert(MODEL, "latency", endpoint=ENDPOINT, fingerprint="fp-2"))
    assert pagerduty.plan_page(latency, "trigger", opened, 1010, 3600).hold is True

    def held(kind, at, version=None):
        return {"held_at": at, "endpoint": ENDPOINT, "version": version,
                "trigger": {"summary": f"{kind} above threshold", "custom_details": {"k": kind}}}
    storm = {"gatehouse/fraud/fraud-prod/latency": held("latency", 1010),
             "gatehouse/fraud/fraud-prod/feature_drift": held("feature_drift", 1005),
             "gatehouse/fraud/fraud-prod/error_rate_v3": held("errors of v3", 1020, "3")}
    assert pagerduty.page_after_storm(storm, opened, 1030, 3600) is None  # the storm goes on
    assert pagerduty.page_after_storm({}, {}, 1030, 3600) is None
    key, trigger = pagerduty.page_after_storm(storm, {}, 1030, 3600)
    assert key == "gatehouse/fraud/fraud-prod/feature_drift"  # the oldest held alert
    assert trigger["summary"] == "Still firing after an alert storm: feature_drift above threshold"
    assert trigger["custom_details"] == {"k": "feature_drift", "also_still_firing": [
        "latency above threshold", "errors of v3 above threshold"]}
    # an incident older than the storm window no longer holds anything back
    assert pagerduty.page_after_storm(storm, opened, 1000 + 3600, 3600)[0] == key

    resolved_latency = note_of(builders.alert(MODEL, "latency", endpoint=ENDPOINT,
                                              status="resolved"))
    assert set(pagerduty.held_after_resolve(
        storm, resolved_latency, ("gatehouse/fraud/fraud-prod/latency",))) == {
        "gatehouse/fraud/fraud-prod/feature_drift", "gatehouse/fraud/fraud-prod/error_rate_v3"}
    rollback_of_v3 = note_of(builders.rollback_completed(MODEL, ENDPOINT, version="3"))
    assert set(pagerduty.held_after_resolve(storm, rollback_of_v3, ())) == {
        "gatehouse/fraud/fraud-prod/latency", "gatehouse/fraud/fraud-prod/feature_drift"}


def test_incident_keys_fit_pagerduty():
    long_model = "m" * 300
    assert len(pagerduty.incident_key(note_of(builders.alert(long_model)))) <= 255


# ---- message shapes, checked by the peers' validators ----

def test_slack_blocks_are_valid_block_kit_with_the_buttons():
    delivery = delivery_of(builders.rollback_requested(MODEL, ENDPOINT))
    blocks = slack.root_blocks(delivery)
    assert block_problems(blocks) == []
    buttons = {b["action_id"]: b for b in blocks[-1]["elements"]}
    assert slack.parse_rollback_value(buttons[slack.ROLLBACK_ACTION_ID]["value"]) == \
        RollbackTarget(MODEL, "2", ENDPOINT)
    assert buttons[slack.OPEN_MLFLOW_ACTION_ID]["url"].startswith("http://mlflow.local/#/models/")
    assert block_problems(slack.reply_blocks(delivery)) == []
    done = slack.root_blocks(delivery_of(builders.rollback_completed(MODEL, ENDPOINT), ui=None))
    assert block_problems(done) == [] and all(b["type"] != "actions" for b in done)


def test_slack_blocks_respect_limits_for_long_and_odd_text():
    gates = [events.GateOutcome(name=f"gate{i}", status="fail", detail="<&>" * 500)
             for i in range(30)]
    delivery = delivery_of(events.GatesFailed(
        model_name="x" * 200, version="1", gates=gates,
        decision=Decision(actor="gatehouse", reason="r" * 5000,
                          metrics={f"m{i}": i for i in range(30)})))
    assert block_problems(slack.root_blocks(delivery)) == []
    repeated = Delivery(**{**delivery.__dict__, "repeat": Repeat("e0", 3, {})})
    assert "seen 3 times" in json.dumps(slack.reply_blocks(repeated))


def test_the_peer_validator_catches_bad_blocks():
    assert block_problems([{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}])
    assert block_problems([{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "x" * 76}}]}])
    assert block_problems([])


@pytest.mark.parametrize("value,problem", [
    ("not json", "not JSON"), ("[]", "not a JSON object"),
    ('{"model": "m", "version": "1"}', "lacks endpoint"),
    ('{"model": "m", "version": "1", "endpoint": "e", "registry": "x"}', "unknown registry"),
])
def test_rollback_values_are_checked(value, problem):
    with pytest.raises(ValueError, match=problem):
        slack.parse_rollback_value(value)


def test_teams_card_is_a_valid_adaptive_card_with_the_signed_link():
    delivery = delivery_of(builders.rollback_requested(MODEL, ENDPOINT),
                           rollback_url="https://gatehouse.example/api/rollouts/x?token=t")
    card = teams.adaptive_card(delivery)
    assert card_problems(card) == []
    actions = card["attachments"][0]["content"]["actions"]
    assert actions[0] == {"type": "Action.OpenUrl", "title": "Roll back", "style": "destructive",
                          "url": "https://gatehouse.example/api/rollouts/x?token=t"}
    assert card_problems({"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.hero", "content": {}}]})


# ---- secrets ----

def test_settings_never_show_secrets_and_know_what_is_configured():
    settings = ChannelSettings.from_settings(Settings.from_env({
        "SLACK_BOT_TOKEN": "xoxb-secret-token", "SLACK_CHANNEL": "#c",
        "TEAMS_WEBHOOK_URL": "https://h/workflows/1/invoke?sv=1.0&sig=verysecretsig",
        "PAGERDUTY_ROUTING_KEY": "r" * 32}))
    assert settings.configured() == ALL
    assert "secret" not in repr(settings)
    redact = make_redactor(settings.secrets())
    leaked = "POST /workflows/1/invoke?sv=1.0&sig=verysecretsig with xoxb-secret-token " + "r" * 32
    assert "secret" not in redact(leaked) and "r" * 32 not in redact(leaked)
    assert ChannelSettings.from_settings(Settings.from_env({})).configured() == {"outbox"}
    with pytest.raises(ValueError, match="SLACK_CHANNEL"):
        ChannelSettings.from_settings(Settings.from_env({"SLACK_BOT_TOKEN": "xoxb-1"}))


def test_an_inconclusive_verdict_is_worded_as_such():
    gates = [events.GateOutcome(name="ece", status="inconclusive", observed=0.04, threshold=0.02),
             events.GateOutcome(name="latency", status="fail", blocking=False),
             events.GateOutcome(name="auc", status="pass")]
    note = note_of(events.GatesFailed(
        model_name=MODEL, version="3", gates=gates,
        decision=Decision(actor="gatehouse", reason="inconclusive: ece inconclusive")))
    assert note.title == "fraud v3 is inconclusive: the holdout is too small to decide its gates"
    failed = note_of(events.GatesFailed(
        model_name=MODEL, version="3", gates=[*gates, events.GateOutcome(name="x", status="fail")],
        decision=Decision(actor="gatehouse", reason="failed")))
    assert failed.title == "fraud v3 failed its gates"


@pytest.mark.parametrize("alias,severity", [("challenger", "info"), ("champion", "warning")])
def test_removing_challenger_is_routine_removing_champion_is_not(alias, severity):
    event = Envelope.wrap(events.ModelVersionAliasDeleted(model_name="m", alias=alias),
                          source="/s")
    assert notification_for(event).severity == severity
