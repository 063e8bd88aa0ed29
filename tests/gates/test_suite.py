"""The whole suite as a pure function, the promotion decision, and the rendered report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from shared.gates import decision
from shared.gates.calibration import expected_calibration_error
from shared.gates.latency import LatencyStats
from shared.gates.policy import GatePolicy
from shared.gates.report import reliability_diagram_png, report_json, report_markdown
from shared.gates.results import GateResult
from shared.gates.suite import ModelOutputs, SuiteInputs, run_suite, verdict_of

SIGNATURE = {"inputs": '[{"type": "double", "name": "a", "required": true}, '
                       '{"type": "double", "name": "b", "required": true}]',
             "outputs": '[{"type": "long", "required": true}]'}


def signature_for(*columns: str) -> dict:
    inputs = ", ".join(f'{{"type": "double", "name": "{c}", "required": true}}' for c in columns)
    return {"inputs": f"[{inputs}]", "outputs": '[{"type": "double", "required": true}]'}


LINEAGE = {"dataset_version": "2026-11", "feature_store_table": "fs.tx", "team": "risk"}


def holdout(n=40_000, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                          "region": rng.choice(["north", "south"], n)})
    truth = 1 / (1 + np.exp(-(1.2 * frame.a - 0.7 * frame.b)))
    labels = (rng.random(n) < truth).astype(int)
    reference = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                              "region": rng.choice(["north", "south"], n)})
    return frame, labels, truth.to_numpy(), reference


def inputs(candidate_scores, champion_scores=None, **changes):
    frame, labels, _, reference = holdout()
    base = dict(model_name="fraud", version="2", labels=labels, class_names=["0", "1"],
                candidate=ModelOutputs(scores=candidate_scores),
                champion=(ModelOutputs(scores=champion_scores) if champion_scores is not None
                          else None),
                champion_version="1" if champion_scores is not None else None, holdout=frame,
                feature_columns=["a", "b"], reference=reference,
                sensitive=frame.region.to_numpy(), candidate_signature=SIGNATURE,
                champion_signature=SIGNATURE if champion_scores is not None else None,
                run_id="run-9",
                version_tags=dict(LINEAGE),
                candidate_latency=LatencyStats(1.0, 2.0, 3.0, 50))
    base.update(changes)
    return SuiteInputs(**base)


POLICY = GatePolicy.model_validate({"sensitive_column": "region"})


def test_a_calibrated_better_candidate_passes_every_gate():
    _, _, truth, _ = holdout()
    weaker = 1 / (1 + np.exp(-np.log(truth / (1 - truth)) * 0.5))  # under-confident champion
    report = run_suite(inputs(truth, weaker), POLICY)
    assert report.verdict == "passed", [(r.name, r.status, r.detail) for r in report.results]
    assert [r.name for r in report.results] == ["lineage", "schema", "ece", "reliability",
                                                "conformal", "comparison", "drift", "fairness",
                                                "latency"]
    assert {r.status for r in report.results} == {"pass"}
    assert report.headline["ece"] < 0.02 and report.headline["champion_ece"] > 0.02
    assert report.headline["auc"] >= report.headline["champion_auc"]
    assert report.champion_table is not None


def test_an_over_confident_candidate_is_refused_by_the_ece_gate():
    _, _, truth, _ = holdout()
    logit = np.log(truth / (1 - truth))
    over_confident = 1 / (1 + np.exp(-2.5 * logit))
    report = run_suite(inputs(over_confident), POLICY)
    assert report.verdict == "failed"
    assert report.result("ece").status == "fail"
    assert "ece" in [r.name for r in report.blocking]
    assert report.result("comparison").status == "skipped"  # no champion: absolute gates only


def test_non_blocking_and_disabled_gates():
    _, _, truth, _ = holdout()
    over_confident = 1 / (1 + np.exp(-2.5 * np.log(truth / (1 - truth))))
    relaxed = GatePolicy.model_validate({
        "ece": {"blocking": False}, "reliability": {"blocking": False},
        "conformal": {"enabled": False}})
    report = run_suite(inputs(over_confident), relaxed)
    assert report.result("ece").status == "fail" and not report.result("ece").blocks
    assert report.result("conformal").detail == "disabled by policy"
    assert report.verdict == "passed"


def test_missing_data_or_predictions_are_explained():
    report = run_suite(inputs(None, labels=None, data_error="s3://x: no such key"), POLICY)
    assert report.verdict == "failed"
    assert report.results[0].name == "evaluation" and "no such key" in report.results[0].detail
    assert report.result("ece").status == "skipped"
    failed = run_suite(inputs(None, candidate=ModelOutputs(error="MlflowException: missing 'b'")),
                       POLICY)
    assert failed.results[0].name == "prediction" and failed.verdict == "failed"
    assert "missing 'b'" in failed.result("comparison").detail


def test_a_champion_that_cannot_predict_makes_the_comparison_inconclusive():
    _, _, truth, _ = holdout()
    report = run_suite(inputs(truth, truth, champion=ModelOutputs(error="boom")), POLICY)
    assert report.result("comparison").status == "inconclusive"
    assert report.verdict == "inconclusive"


def test_verdict_rules():
    passed = GateResult("a", "pass", True)
    warned = GateResult("b", "warn", True)
    unresolved = GateResult("c", "inconclusive", True)
    failed = GateResult("d", "fail", True)
    assert verdict_of([passed, warned, GateResult("e", "fail", False)]) == "passed"
    assert verdict_of([passed, unresolved]) == "inconclusive"
    assert verdict_of([unresolved, failed]) == "failed"


def test_promotion_plan():
    _, _, truth, _ = holdout()
    report = run_suite(inputs(truth), POLICY)
    plan = decision.plan_promotion(report, False, None, "run-1", "http://x/run-1", "now")
    assert plan.set_aliases == ("challenger",) and plan.event_kind == "gates.passed"
    assert "no champion yet" in plan.reason
    first = decision.plan_promotion(report, True, None, "run-1", None, "now", "ana")
    assert first.set_aliases == ("challenger", "champion")
    assert first.reason.endswith("(re-run requested by ana)")
    tags = first.version_tags
    assert tags["gatehouse.gates.verdict"] == "passed"
    assert tags["gatehouse.gates.report_run_id"] == "run-1"
    assert tags["gatehouse.gates.decided_by"] == "gatehouse"
    assert json.loads(tags["gatehouse.gates.metrics"])["ece"] == pytest.approx(
        report.headline["ece"], abs=1e-6)
    over = 1 / (1 + np.exp(-2.5 * np.log(truth / (1 - truth))))
    failed = run_suite(inputs(over), POLICY)
    refused = decision.plan_promotion(failed, True, "2", "run-2", None, "now")
    assert refused.set_aliases == () and refused.remove_challenger
    assert refused.event_kind == "gates.failed" and refused.reason.startswith("failed: ece fail")
    assert not decision.plan_promotion(failed, True, "1", "r", None, "now").remove_challenger


def test_report_rendering():
    _, _, truth, _ = holdout()
    weaker = 1 / (1 + np.exp(-np.log(truth / (1 - truth)) * 0.5))
    report = run_suite(inputs(truth, weaker), POLICY)
    context = {"generated_at": "2026-11-25T12:00:00+00:00", "requested_by": None}
    document = json.loads(report_json(report, POLICY, context))
    assert document["verdict"] == "passed" and document["champion_version"] == "1"
    assert len(document["gates"]) == 9 and document["policy"]["ece"]["threshold"] == 0.02
    assert document["policy"]["schema"] == {"enabled": True, "blocking": True}
    assert len(document["reliability"]["candidate"]) == 15
    markdown = report_markdown(report, context)
    assert markdown.startswith("# Gates for fraud v2: PASSED")
    assert "| ece | PASS | yes |" in markdown and "## Against the champion" in markdown
    assert "![reliability diagram](reliability.png)" in markdown
    png = reliability_diagram_png(report.candidate_table, report.champion_table, "t")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_multiclass_suite():
    rng = np.random.default_rng(12)
    n, k = 30_000, 3
    logits = rng.normal(size=(n, k)) * 1.5
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(proba, axis=1)).sum(axis=1).clip(0, k - 1)
    policy = GatePolicy.model_validate({"task": "multiclass_classification",
                                        "conformal": {"classifier_score": "aps"}})
    frame = pd.DataFrame({"a": rng.normal(size=n)})
    report = run_suite(SuiteInputs("m", "1", labels=labels, class_names=["x", "y", "z"],
                                   candidate=ModelOutputs(scores=proba), holdout=frame,
                                   feature_columns=["a"], candidate_signature=signature_for("a"),
                                   run_id="r", version_tags=LINEAGE), policy)
    assert report.calibration.kind == "top_label"
    assert report.result("ece").status == "pass"
    assert report.result("conformal").evidence["method"] == "aps"
    assert set(report.result("conformal").evidence["per_class"]) == {"x", "y", "z"}
    assert report.result("fairness").status == "skipped"
    assert report.verdict == "passed"
    classwise = run_suite(SuiteInputs("m", "1", labels=labels, class_names=["x", "y", "z"],
                                      candidate=ModelOutputs(scores=proba), holdout=frame,
                                      feature_columns=["a"], candidate_signature=signature_for("a"),
                                      run_id="r", version_tags=LINEAGE),
                          GatePolicy.model_validate({"task": "multiclass_classification",
                                                     "ece": {"kind": "classwise"}}))
    assert classwise.calibration.kind == "classwise"
    assert set(classwise.calibration.tables) == {"class_0", "class_1", "class_2"}
    assert classwise.candidate_table.ece == pytest.approx(
        expected_calibration_error(labels, proba, "top_label"))


def test_regression_suite():
    rng = np.random.default_rng(13)
    n = 20_000
    x = rng.uniform(0, 3, n)
    y = 2 * x + rng.normal(0, 0.5 + 0.3 * x)
    frame = pd.DataFrame({"x": x})
    policy = GatePolicy.model_validate({
        "task": "regression", "conformal": {"regression_score": "cqr", "lower_output": "lo",
                                            "upper_output": "hi"}})
    sigma = 0.5 + 0.3 * x
    report = run_suite(SuiteInputs(
        "m", "2", labels=y, candidate=ModelOutputs(scores=2 * x, lower=2 * x - 1.64 * sigma,
                                                   upper=2 * x + 1.64 * sigma),
        champion=ModelOutputs(scores=2 * x + 0.3), champion_version="1", holdout=frame,
        feature_columns=["x"], candidate_signature=signature_for("x"),
        champion_signature=signature_for("x"),
        run_id="r", version_tags=LINEAGE), policy)
    assert report.result("ece").status == "skipped"
    assert report.result("conformal").status == "pass"
    assert report.result("conformal").evidence["method"] == "cqr"
    assert report.result("comparison").status == "pass"
    assert report.headline["rmse"] < report.headline["champion_rmse"]
    assert report.verdict == "passed"
