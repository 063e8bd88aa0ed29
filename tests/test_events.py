"""The event schema: envelopes round-trip, types match payloads, ids are stable, schemas in sync."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared import events
from shared.dev import schema_export
from shared.events import Envelope

SAMPLES: list[events.Payload] = [
    events.RegisteredModelCreated(model_name="fraud"),
    events.ModelVersionCreated(model_name="fraud", version="2", run_id="r1"),
    events.ModelVersionTagSet(model_name="fraud", version="2", tags={"k": "v"}),
    events.ModelVersionTagDeleted(model_name="fraud", version="2", key="k"),
    events.ModelVersionAliasCreated(model_name="fraud", alias="champion", version="2"),
    events.ModelVersionAliasDeleted(model_name="fraud", alias="champion"),
    events.ModelVersionStageTransitioned(model_name="fraud", version="2", to_stage="Production",
                                         registry="databricks"),
    events.StageTransitionRequested(model_name="fraud", version="2", to_stage="Staging"),
    events.RegistryCommentCreated(model_name="fraud", comment="lgtm"),
]
DECISION = events.Decision(actor="gatehouse", reason="all gates passed", metrics={"ece": 0.01})
SAMPLES += [
    events.GatesPassed(model_name="fraud", version="2", decision=DECISION, gates=[
        events.GateOutcome(name="ece", status="pass", observed=0.01, threshold=0.02)]),
    events.GatesFailed(model_name="fraud", version="3", decision=DECISION),
    events.CanaryStarted(model_name="fraud", version="2", endpoint="fraud-ep", traffic_percent=5,
                         decision=DECISION),
    events.TrafficRamped(model_name="fraud", version="2", endpoint="fraud-ep", from_percent=5,
                         to_percent=25, decision=DECISION),
    events.ModelPromoted(model_name="fraud", version="2", decision=DECISION),
    events.RollbackRequested(model_name="fraud", version="4", endpoint="fraud-ep",
                             decision=DECISION),
    events.RollbackCompleted(model_name="fraud", version="4", endpoint="fraud-ep",
                             restored_version="2", decision=DECISION),
    events.MonitoringAlert(alert_kind=events.AlertKind.FEATURE_DRIFT, source="gatehouse",
                           title="PSI 0.3 on amount", fingerprint="abc", figures={"psi": 0.3}),
    events.RetrainingTriggered(model_name="fraud", reason="drift", decision=DECISION),
    events.NotificationRequested(title="t", text="x", about_event_id="e", about_event_type="t",
                                 dedup_key="d"),
    events.RolloutStalled(model_name="fraud", version="4", endpoint="fraud-ep",
                          traffic_percent=5, held_seconds=1800, time_to_decision_seconds=7200,
                          challenger_requests_per_minute=0.5, on_stall="hold",
                          decision=DECISION),
    events.TickDue(job="monitor", endpoint="fraud-ep", window=5, due_at=1500.0,
                   expires_at=1800.0),
]


def test_samples_cover_every_event_class():
    assert {type(s) for s in SAMPLES} == set(events.EVENT_CLASSES)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.kind)
def test_every_event_round_trips_through_the_envelope(payload):
    envelope = Envelope.wrap(payload, source="/tests")
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert type(again.data) is type(payload)
    assert again.type == "io.gatehouse." + payload.kind
    assert json.loads(envelope.to_json())["specversion"] == "1.0"


def test_envelope_type_must_match_the_payload():
    envelope = json.loads(Envelope.wrap(SAMPLES[1], source="/tests").to_json())
    envelope["type"] = "io.gatehouse.gates.passed"
    with pytest.raises(ValidationError, match="does not match data kind"):
        Envelope.model_validate(envelope)


@pytest.mark.parametrize("field,value", [("specversion", "0.3"), ("id", ""), ("source", ""),
                                         ("time", "not a time"), ("unexpected", 1),
                                         ("traceparent", "00-abc-def-01"),
                                         ("traceparent", f"00-{'A' * 32}-{'1' * 16}-01")])
def test_envelope_rejects_bad_attributes(field, value):
    envelope = json.loads(Envelope.wrap(SAMPLES[0], source="/tests").to_json())
    envelope[field] = value
    with pytest.raises(ValidationError):
        Envelope.model_validate(envelope)


def test_ids_derived_from_a_delivery_are_stable_and_distinct():
    first = Envelope.wrap(SAMPLES[1], source="/a", dedupe_key="delivery-1")
    again = Envelope.wrap(SAMPLES[1], source="/a", dedupe_key="delivery-1")
    other = Envelope.wrap(SAMPLES[1], source="/a", dedupe_key="delivery-2")
    assert first.id == again.id != other.id
    note = SAMPLES[-1]
    assert first.derived(note, source="/n").id == again.derived(note, source="/n").id
    assert first.derived(note, source="/n").id != first.id
    assert Envelope.wrap(SAMPLES[1], source="/a").id != Envelope.wrap(SAMPLES[1], source="/a").id


def test_derived_events_carry_the_trace_of_their_cause():
    """W3C traceparent in the envelope: a chain of events shares one trace id, each event has
    its own span id, and a redelivery (same ids) carries the same traceparent."""
    import re

    first = Envelope.wrap(SAMPLES[1], source="/a", dedupe_key="delivery-1")
    note = SAMPLES[-1]
    child = first.derived(note, source="/n")
    grandchild = child.derived(SAMPLES[2], source="/g")
    for envelope in (first, child, grandchild):
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", envelope.traceparent or "")
    trace = {e.traceparent.split("-")[1] for e in (first, child, grandchild) if e.traceparent}
    spans = {e.traceparent.split("-")[2] for e in (first, child, grandchild) if e.traceparent}
    assert len(trace) == 1 and len(spans) == 3
    assert child.traceparent == first.derived(note, source="/n").traceparent
    assert Envelope.from_json(child.to_json()).traceparent == child.traceparent
    other = Envelope.wrap(SAMPLES[1], source="/a", dedupe_key="delivery-2")
    assert other.traceparent.split("-")[1] not in trace  # type: ignore[union-attr]
    old = json.loads(first.to_json())
    del old["traceparent"]  # envelopes queued before tracing still read
    assert Envelope.model_validate(old).traceparent is None
    assert Envelope.model_validate(old).derived(note, source="/n").traceparent


def test_subject_names_model_and_version():
    assert Envelope.wrap(SAMPLES[1], source="/t").subject == "fraud/2"
    assert Envelope.wrap(SAMPLES[0], source="/t").subject == "fraud"


def test_wrap_keeps_the_given_time():
    when = datetime(2026, 1, 1, tzinfo=UTC)
    assert Envelope.wrap(SAMPLES[0], source="/t", time=when).time == when


def test_transition_events_record_who_why_and_figures():
    for payload in SAMPLES:
        if payload.kind.startswith(("gates.", "rollout.", "retraining.")):
            decision = payload.decision
            assert decision.actor and decision.reason and isinstance(decision.metrics, dict)


def test_committed_json_schemas_are_in_sync_with_the_code():
    committed = {path.name: path.read_text() for path in schema_export.SCHEMA_DIR.glob("*.json")}
    assert committed == schema_export.rendered(), "run `make schema` and commit schemas/"


def test_schema_export_writes_every_event(tmp_path):
    written = schema_export.write(tmp_path)
    names = {p.name for p in written}
    assert "envelope.schema.json" in names
    for cls in events.EVENT_CLASSES:
        assert f"{cls.model_fields['kind'].default}.schema.json" in names
    envelope_schema = json.loads((tmp_path / "envelope.schema.json").read_text())
    assert "data" in envelope_schema["properties"]
    assert typing.get_args(events.EventData)


def test_handlers_refuse_envelopes_of_another_kind():
    alert = Envelope.wrap(SAMPLES[16], source="/tests")
    assert Envelope.from_json_expecting(alert.to_json(), events.MonitoringAlert) == alert
    with pytest.raises(ValueError, match="is a io.gatehouse.monitoring.alert, not gates.passed"):
        Envelope.from_json_expecting(alert.to_json(), events.GatesPassed)
