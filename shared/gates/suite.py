"""Run the configured gates over one candidate (and its champion): pure, given the holdout arrays,
both models' predictions and the facts read from the registry.

Order: lineage, schema, ece, reliability, conformal, comparison, drift, fairness, latency. A gate
the policy disables is reported as skipped. When the holdout could not be loaded or the candidate
could not predict on it, a failing, blocking `evaluation` / `prediction` result says so and the
gates that needed it are skipped, so the verdict is always explained by a result.

Verdict: `passed` when no blocking gate fails or is inconclusive; `failed` when a blocking gate
fails; `inconclusive` when none fails but one cannot resolve its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from shared.gates import calibration, comparison, conformal, drift, fairness, latency, lineage
from shared.gates import schema
from shared.gates.calibration import CalibrationAssessment, ReliabilityTable
from shared.gates.policy import GATE_NAMES, GatePolicy
from shared.gates.results import FAIL, INCONCLUSIVE, GateResult, skipped

Verdict = Literal["passed", "failed", "inconclusive"]


@dataclass(frozen=True)
class ModelOutputs:
    """What one model predicted on the holdout, or why it could not.

    Classifiers: `scores` = P(y = positive) (n,) for binary, class probabilities (n, K) otherwise.
    Regressors: `scores` = point predictions; `lower`/`upper` quantiles (CQR) and `difficulty`
    (normalised scores) when the policy names those outputs."""

    scores: np.ndarray | None = None
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    difficulty: np.ndarray | None = None
    error: str | None = None


@dataclass(frozen=True)
class SuiteInputs:
    model_name: str
    version: str
    labels: np.ndarray | None = None  # class indices 0..K-1, or regression targets
    class_names: list[str] | None = None
    candidate: ModelOutputs = field(default_factory=ModelOutputs)
    champion: ModelOutputs | None = None
    champion_version: str | None = None
    holdout: Any = None  # pandas DataFrame of the evaluation set
    feature_columns: list[str] | None = None
    reference: Any = None  # pandas DataFrame of the reference (training) data
    reference_error: str | None = None  # a configured reference that could not be read
    sensitive: np.ndarray | None = None
    candidate_signature: Any = None
    champion_signature: Any = None
    run_id: str | None = None
    version_tags: dict[str, str] = field(default_factory=dict)
    run_tags: dict[str, str] = field(default_factory=dict)
    candidate_latency: latency.LatencyStats | None = None
    champion_latency: latency.LatencyStats | None = None
    data_error: str | None = None


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


def _diagram_kind(kind: str) -> str:
    return "top_label" if kind == "classwise" else kind


def run_suite(inputs: SuiteInputs, policy: GatePolicy) -> SuiteReport:
    task = policy.task
    classifier = task != "regression"
    have_data = inputs.data_error is None and inputs.labels is not None
    predicted = have_data and inputs.candidate.error is None and inputs.candidate.scores is not None
    no_predictions = (f"the evaluation data is unavailable: {inputs.data_error}"
                      if not have_data else
                      f"the candidate could not predict: {inputs.candidate.error}")
    has_champion = inputs.champion_version is not None
    champion_ok = (has_champion and inputs.champion is not None
                   and inputs.champion.error is None and inputs.champion.scores is not None)
    labels = inputs.labels
    results: list[GateResult] = []
    headline: dict[str, float] = {}
    assessment, champion_table, candidate_table, comparisons = None, None, None, []

    if not have_data:
        results.append(GateResult("evaluation", FAIL, True, detail=no_predictions))
    elif not predicted:
        results.append(GateResult("prediction", FAIL, True, detail=no_predictions))

    for name in GATE_NAMES:
        gate = policy.gate(name)
        if not gate.enabled:
            results.append(skipped(name, gate.blocking, "disabled by policy"))
            continue
        if name == "lineage":
            results.append(lineage.lineage_gate(
                inputs.run_id, inputs.version_tags, inputs.run_tags, policy.lineage.required_tags,
                policy.lineage.require_run_id, gate.blocking))
        elif name == "schema":
            dtypes = (dict(inputs.holdout.dtypes.items())
                      if inputs.holdout is not None and have_data else None)
            results.append(schema.schema_gate(
                inputs.candidate_signature, inputs.champion_signature, dtypes,
                inputs.feature_columns, gate.blocking, has_champion))
        elif name == "ece":
            if not classifier:
                results.append(skipped(name, gate.blocking, "calibration gates need a classifier"))
                continue
            if not predicted:
                results.append(skipped(name, gate.blocking, no_predictions))
                continue
            assessment = calibration.assess_calibration(
                labels, inputs.candidate.scores, policy.ece.kind, policy.ece.n_bins,
                policy.ece.binning, policy.confidence_level, policy.n_bootstrap, policy.seed)
            results.append(calibration.ece_gate(assessment, policy.ece.threshold, gate.blocking))
            candidate_table = (assessment.primary_table if assessment.kind != "classwise" else
                               _tables(labels, inputs.candidate.scores, "top_label", policy)[0])
            headline.update({"ece": assessment.ece, "ece_lower": assessment.lower,
                             "ece_upper": assessment.upper})
            if champion_ok:
                champion_table, headline["champion_ece"] = _champion_calibration(
                    labels, inputs.champion.scores, assessment.kind, policy)
        elif name == "reliability":
            if not classifier or not predicted:
                why = "calibration gates need a classifier" if not classifier else no_predictions
                results.append(skipped(name, gate.blocking, why))
                continue
            if assessment is None:
                assessment = calibration.assess_calibration(
                    labels, inputs.candidate.scores, policy.ece.kind, policy.ece.n_bins,
                    policy.ece.binning, policy.confidence_level, policy.n_bootstrap, policy.seed)
            results.append(calibration.reliability_gate(
                assessment, policy.reliability.max_gap, policy.reliability.min_bin_count,
                gate.blocking))
        elif name == "conformal":
            if not predicted:
                results.append(skipped(name, gate.blocking, no_predictions))
                continue
            report = _coverage(inputs, policy)
            results.append(conformal.conformal_gate(report, policy.conformal.tolerance,
                                                    gate.blocking))
            headline.update({"coverage": report.coverage,
                             "coverage_mean_size": report.mean_size})
        elif name == "comparison":
            if not predicted:
                results.append(skipped(name, gate.blocking, no_predictions))
                continue
            if has_champion and not champion_ok:
                why = (inputs.champion.error if inputs.champion is not None
                       else "no predictions")
                results.append(GateResult(name, INCONCLUSIVE, gate.blocking,
                                          detail=f"the champion v{inputs.champion_version} could "
                                                 f"not predict on the holdout: {why}"))
            comparisons = comparison.compare_metrics(
                task, labels, inputs.candidate.scores,
                inputs.champion.scores if champion_ok else None, policy.metric_specs(),
                policy.confidence_level, policy.n_bootstrap, policy.seed)
            for c in comparisons:
                headline[c.key] = c.candidate
                if c.champion is not None:
                    headline[f"champion_{c.key}"] = c.champion
            if not has_champion or champion_ok:
                results.append(comparison.comparison_gate(comparisons, gate.blocking))
        elif name == "drift":
            if inputs.reference_error is not None:
                results.append(GateResult(name, FAIL, gate.blocking,
                                          detail=f"reference data: {inputs.reference_error}"))
                continue
            if inputs.reference is None or not have_data:
                why = ("no reference data configured" if inputs.reference is None
                       else no_predictions)
                results.append(skipped(name, gate.blocking, why))
                continue
            columns = [c for c in inputs.holdout.columns
                       if c in inputs.reference.columns and c != policy.label_column]
            drifts = drift.drift_report(inputs.reference, inputs.holdout, columns,
                                        policy.drift.categorical_columns, policy.drift.n_bins,
                                        policy.drift.epsilon)
            result = drift.drift_gate(drifts, policy.drift.psi_warn, policy.drift.psi_fail,
                                      gate.blocking, policy.drift.ks_warn, policy.drift.js_warn)
            results.append(result)
            if result.observed is not None:
                headline["max_psi"] = result.observed
        elif name == "fairness":
            if policy.sensitive_column is None or inputs.sensitive is None:
                results.append(skipped(name, gate.blocking, "no sensitive column configured"))
            elif task != "binary_classification":
                results.append(skipped(name, gate.blocking,
                                       "fairness differences need a binary classifier"))
            elif not predicted:
                results.append(skipped(name, gate.blocking, no_predictions))
            else:
                scores = np.asarray(inputs.candidate.scores)
                positive = (scores[:, 1] if scores.ndim == 2 else scores) >= \
                    policy.fairness.decision_threshold
                report = fairness.fairness_report(labels, positive, inputs.sensitive)
                results.append(fairness.fairness_gate(
                    report, policy.fairness.max_demographic_parity_difference,
                    policy.fairness.max_equalized_odds_difference, gate.blocking))
                headline.update({
                    "demographic_parity_difference": report.demographic_parity_difference,
                    "equalized_odds_difference": report.equalized_odds_difference})
        elif name == "latency":
            results.append(latency.latency_gate(
                inputs.candidate_latency, inputs.champion_latency, policy.latency.max_p99_ms,
                policy.latency.max_p99_ratio, policy.latency.ratio_floor_ms, gate.blocking,
                why_missing=no_predictions if not predicted else "latency was not measured"))
            if inputs.candidate_latency is not None:
                headline["p99_ms"] = inputs.candidate_latency.p99_ms
                if inputs.champion_latency is not None:
                    headline["champion_p99_ms"] = inputs.champion_latency.p99_ms
    return SuiteReport(inputs.model_name, inputs.version, inputs.champion_version,
                       verdict_of(results), results,
                       {k: float(v) for k, v in headline.items() if np.isfinite(v)},
                       assessment, champion_table, candidate_table, comparisons)


def _champion_calibration(labels, scores, kind: str,
                          policy: GatePolicy) -> tuple[ReliabilityTable, float]:
    """The champion's table for the diagram (top-label when the gate is classwise) and its ECE
    of the gate's kind."""
    of_kind = _tables(labels, scores, kind, policy)
    shown = of_kind[0] if _diagram_kind(kind) == kind else _tables(labels, scores, "top_label",
                                                                   policy)[0]
    return shown, float(np.mean([table.ece for table in of_kind]))


def _tables(labels, scores, kind: str, policy: GatePolicy) -> list[ReliabilityTable]:
    return [calibration.reliability_table(c, o, policy.ece.n_bins, policy.ece.binning)
            for _, c, o in calibration.calibration_tracks(labels, scores, kind)]


def _coverage(inputs: SuiteInputs, policy: GatePolicy) -> conformal.CoverageReport:
    settings = policy.conformal
    common = dict(level=settings.level, calibration_fraction=settings.calibration_fraction,
                  seed=policy.seed, confidence_level=policy.confidence_level,
                  ordered=settings.split == "ordered")
    outputs = inputs.candidate
    if policy.task == "regression":
        return conformal.regression_coverage(
            inputs.labels, outputs.scores, score=settings.regression_score,
            difficulty=outputs.difficulty, lower=outputs.lower, upper=outputs.upper, **common)
    return conformal.classifier_coverage(
        inputs.labels, outputs.scores, score=settings.classifier_score,
        mondrian=settings.mondrian, class_names=inputs.class_names, **common)
