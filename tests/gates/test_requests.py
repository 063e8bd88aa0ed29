"""What the run-gates handler acts on, and the re-run request body (pure, no servers)."""

from __future__ import annotations

import pytest

from shared.events import (
    ModelVersionAliasCreated,
    ModelVersionCreated,
    ModelVersionTagSet,
)
from shared.foundation.http import BodyError, parse_body
from shared.gates.request import (
    RERUN_REASON_TAG,
    RERUN_TAG,
    RerunBody,
    gate_request,
    rerun_event,
)


def test_created_versions_run_once_per_version():
    request = gate_request(ModelVersionCreated(model_name="fraud", version="3",
                                               registry="databricks"))
    assert request.key == "fraud/3" and request.registry == "databricks"
    assert request.rerun is None


def test_rerun_tags_run_once_per_value():
    request = gate_request(ModelVersionTagSet(
        model_name="fraud", version="3", actor="ana",
        tags={RERUN_TAG: " fix-1 ", RERUN_REASON_TAG: "new holdout"}))
    assert request.key == "fraud/3/rerun/fix-1"
    assert (request.requested_by, request.reason) == ("ana", "new holdout")


def test_other_events_are_not_gate_runs():
    assert gate_request(ModelVersionTagSet(model_name="fraud", version="3",
                                           tags={"gatehouse.gates.verdict": "passed"})) is None
    assert gate_request(ModelVersionTagSet(model_name="fraud", version="3",
                                           tags={RERUN_TAG: "  "})) is None
    assert gate_request(ModelVersionAliasCreated(model_name="fraud", alias="champion",
                                                 version="3")) is None


def test_rerun_body():
    assert parse_body(RerunBody, b"", optional=True).rerun_id is None
    body = parse_body(RerunBody, b'{"rerun_id": "r-1.a_b", "requested_by": "ana"}',
                      optional=True)
    assert body.rerun_id == "r-1.a_b" and body.requested_by == "ana"
    with pytest.raises(BodyError) as too_long:
        parse_body(RerunBody, b'{"rerun_id": "' + b"x" * 65 + b'"}', optional=True)
    assert [p.split(":")[0] for p in too_long.value.problems] == ["rerun_id"]
    with pytest.raises(BodyError, match="not valid JSON"):
        parse_body(RerunBody, b"{", optional=True)


def test_a_rerun_event_is_the_request_the_handler_acts_on():
    event = rerun_event("fraud", "3", "fix-1", RerunBody(requested_by="ana", reason="new data"))
    request = gate_request(event.data)
    assert request.key == "fraud/3/rerun/fix-1"
    assert (request.requested_by, request.reason) == ("ana", "new data")
    again = rerun_event("fraud", "3", "fix-1", RerunBody(requested_by="ana", reason="new data"))
    assert again.id == event.id  # a retried POST with the same rerun_id is the same event
    assert rerun_event("fraud", "3", "fix-2", RerunBody()).id != event.id


def test_a_rerun_without_reason_or_requester():
    event = rerun_event("fraud", "3", "abc", RerunBody())
    assert event.data.tags == {RERUN_TAG: "abc"} and event.data.actor == "api"
