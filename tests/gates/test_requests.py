"""What the run-gates handler acts on, and the re-run request body (pure, no servers)."""

from __future__ import annotations

from functions.run_gates import RERUN_REASON_TAG, RERUN_TAG, gate_request, parse_rerun_body
from shared.events import ModelVersionAliasCreated, ModelVersionCreated, ModelVersionTagSet


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
    body, problem = parse_rerun_body(b"")
    assert problem is None and body.rerun_id is None
    body, problem = parse_rerun_body(b'{"rerun_id": "r-1.a_b", "requested_by": "ana"}')
    assert problem is None and body.rerun_id == "r-1.a_b"
    assert "rerun_id" in parse_rerun_body(b'{"rerun_id": "' + b"x" * 65 + b'"}')[1]
    assert parse_rerun_body(b"{")[1].startswith("body is not JSON")
