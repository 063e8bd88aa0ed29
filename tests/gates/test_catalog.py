"""The gate table: one entry per gate, each with its policy section, and a judge the suite calls
only for enabled gates."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from shared.gates.catalog import GATE_NAMES, GATES, Findings, Gate
from shared.gates.inputs import ModelOutputs, SuiteInputs
from shared.gates.policy import GatePolicy
from shared.gates.results import PASS, GateResult
from shared.gates.suite import run_suite


def test_every_gate_has_a_policy_section_with_enabled_and_blocking():
    policy = GatePolicy()
    for gate in GATES:
        assert gate.section in GatePolicy.model_fields, gate.name
        settings = gate.settings(policy)
        assert settings is policy.gate(gate.name)
        assert isinstance(settings.enabled, bool) and isinstance(settings.blocking, bool)


def test_gate_names_are_unique_and_in_report_order():
    assert GATE_NAMES == ("lineage", "schema", "ece", "reliability", "conformal", "comparison",
                          "drift", "fairness", "latency")
    assert len(set(GATE_NAMES)) == len(GATES)


def test_the_suite_runs_exactly_the_table(monkeypatch):
    seen = []

    def judge(context, blocking):
        seen.append(blocking)
        return Findings(GateResult("extra", PASS, blocking, observed=0.5), {"extra": 0.5})

    from shared.gates import suite

    monkeypatch.setattr(suite, "GATES", (Gate("extra", "lineage", judge),))
    report = run_suite(SuiteInputs("m", "1"), GatePolicy.model_validate(
        {"lineage": {"blocking": False}}))
    assert [r.name for r in report.results] == ["evaluation", "extra"]
    assert seen == [False] and report.headline == {"extra": 0.5}


def test_a_disabled_gate_is_not_judged(monkeypatch):
    from shared.gates import suite

    def judge(context, blocking):
        raise AssertionError("a disabled gate must not be judged")

    monkeypatch.setattr(suite, "GATES", (Gate("lineage", "lineage", judge),))
    report = run_suite(SuiteInputs("m", "1"), GatePolicy.model_validate(
        {"lineage": {"enabled": False}}))
    assert report.result("lineage").status == "skipped"
    assert report.result("lineage").detail == "disabled by policy"


def test_calibration_is_assessed_once_for_both_calibration_gates(monkeypatch):
    from shared.gates import calibration

    calls = []
    real = calibration.assess_calibration
    monkeypatch.setattr(calibration, "assess_calibration",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    rng = np.random.default_rng(3)
    scores = rng.uniform(0.05, 0.95, 5_000)
    labels = (rng.random(5_000) < scores).astype(int)
    inputs = SuiteInputs("m", "1", labels=labels, candidate=ModelOutputs(scores=scores))
    policy = GatePolicy.model_validate({"n_bootstrap": 50})
    report = run_suite(inputs, policy)
    assert len(calls) == 1
    assert report.result("ece").status != "skipped"
    assert report.result("reliability").status != "skipped"
    off = run_suite(inputs, GatePolicy.model_validate(
        {"n_bootstrap": 50, "ece": {"enabled": False}, "reliability": {"enabled": False}}))
    assert len(calls) == 1 and off.calibration is None
    only_reliability = run_suite(replace(inputs), GatePolicy.model_validate(
        {"n_bootstrap": 50, "ece": {"enabled": False}}))
    assert only_reliability.calibration is not None
    assert only_reliability.candidate_table is None  # the diagram belongs to the ECE gate
