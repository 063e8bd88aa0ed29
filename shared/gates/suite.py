"""Run the configured gates over one candidate (and its champion): pure, given the holdout arrays,
both models' predictions and the facts read from the registry.

The gates and their order are the table in shared/gates/catalog.py (lineage, schema, ece,
reliability, conformal, comparison, drift, fairness, latency). A gate the policy disables is
reported as skipped. When the holdout could not be loaded or the candidate could not predict on
it, a failing, blocking `evaluation` / `prediction` result says so and the gates that needed it
are skipped, so the verdict is always explained by a result.

Verdict: `passed` when no blocking gate fails or is inconclusive; `failed` when a blocking gate
fails; `inconclusive` when none fails but one cannot resolve its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from shared.gates import comparison
from shared.gates.calibration import CalibrationAssessment, ReliabilityTable
from shared.gates.catalog import GATES
from shared.gates.context import suite_context
from shared.gates.inputs import ModelOutputs, SuiteInputs
from shared.gates.policy import GatePolicy
from shared.gates.results import FAIL, INCONCLUSIVE, GateResult, skipped

__all__ = ["ModelOutputs", "SuiteInputs", "SuiteReport", "Verdict", "run_suite", "verdict_of"]

Verdict = Literal["passed", "failed", "inconclusive"]


@dataclass(frozen=True)
class SuiteReport:
    model_name: str
    version: str
    champion_version: str | None
    verdict: Verdict
    results: list[GateResult]
    headline: dict[str, float]
    calibration: CalibrationAssessment | None = None
    champion_table: ReliabilityTable | None = None
    candidate_table: ReliabilityTable | None = None  # the diagram's (top-label for classwise)
    comparisons: list[comparison.MetricComparison] = field(default_factory=list)

    @property
    def blocking(self) -> list[GateResult]:
        return [r for r in self.results if r.blocks]

    def result(self, name: str) -> GateResult | None:
        return next((r for r in self.results if r.name == name), None)


def verdict_of(results: list[GateResult]) -> Verdict:
    if any(r.blocks and r.status == FAIL for r in results):
        return "failed"
    if any(r.blocks and r.status == INCONCLUSIVE for r in results):
        return "inconclusive"
    return "passed"


def run_suite(inputs: SuiteInputs, policy: GatePolicy) -> SuiteReport:
    context = suite_context(inputs, policy)
    results: list[GateResult] = []
    headline: dict[str, float] = {}
    if not context.have_data:
        results.append(GateResult("evaluation", FAIL, True, detail=context.no_predictions))
    elif not context.predicted:
        results.append(GateResult("prediction", FAIL, True, detail=context.no_predictions))
    for gate in GATES:
        settings = gate.settings(policy)
        if not settings.enabled:
            results.append(skipped(gate.name, settings.blocking, "disabled by policy"))
            continue
        findings = gate.judge(context, settings.blocking)
        results.append(findings.result)
        headline.update(findings.headline)
    return SuiteReport(inputs.model_name, inputs.version, inputs.champion_version,
                       verdict_of(results), results,
                       {k: float(v) for k, v in headline.items() if np.isfinite(v)},
                       context.assessment, context.champion_table, context.candidate_table,
                       context.comparisons)
