"""Every gate, in the order the suite runs and reports them: its name, the section of the `gates`
policy that enables and configures it, and the function that judges it.

A judge takes the suite's shared context (shared/gates/context.py) and whether the gate blocks,
and returns its findings: the result to report and the headline metrics it contributes. The
suite reports a gate its policy disables as skipped without calling the judge. Adding a gate is
one entry in GATES (and its section in shared/gates/policy.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from shared.gates import (
    calibration,
    comparison,
    conformal,
    drift,
    fairness,
    latency,
    lineage,
    schema,
)
from shared.gates.context import SuiteContext
from shared.gates.inputs import SuiteInputs
from shared.gates.policy import DriftGate, GatePolicy, GateSection
from shared.gates.results import FAIL, INCONCLUSIVE, GateResult, skipped

NEEDS_A_CLASSIFIER = "calibration gates need a classifier"
SUMMARISED_COMPARISON = ("the comparison's paired bootstrap needs both models' rows; the holdout "
                         "was summarised on Spark")


@dataclass(frozen=True)
class Findings:
    result: GateResult
    headline: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Gate:
    name: str
    section: str  # the GatePolicy field holding `enabled`, `blocking` and the gate's settings
    judge: Callable[[SuiteContext, bool], Findings]

    def settings(self, policy: GatePolicy) -> GateSection:
        section = getattr(policy, self.section)
        assert isinstance(section, GateSection), f"{self.section} is not a gate's policy section"
        return section


def _lineage(context: SuiteContext, blocking: bool) -> Findings:
    inputs, settings = context.inputs, context.policy.lineage
    return Findings(lineage.lineage_gate(inputs.run_id, inputs.version_tags, inputs.run_tags,
                                      settings.required_tags, settings.require_run_id, blocking))


def _schema(context: SuiteContext, blocking: bool) -> Findings:
    inputs = context.inputs
    dtypes = (dict(inputs.holdout.dtypes.items())
              if inputs.holdout is not None and context.have_data else None)
    return Findings(schema.schema_gate(inputs.candidate_signature, inputs.champion_signature,
                                    dtypes, inputs.feature_columns, blocking,
                                    context.has_champion))


def _ece(context: SuiteContext, blocking: bool) -> Findings:
    if not context.classifier:
        return Findings(skipped("ece", blocking, NEEDS_A_CLASSIFIER))
    if not context.predicted:
        return Findings(skipped("ece", blocking, context.no_predictions))
    assessment = context.assessment
    if assessment is None:  # the context assesses calibration whenever this gate is enabled
        return Findings(calibration.ece_gate(None, context.policy.ece.threshold, blocking))
    headline = {"ece": assessment.ece, "ece_lower": assessment.lower,
                "ece_upper": assessment.upper}
    if context.champion_ece is not None:
        headline["champion_ece"] = context.champion_ece
    return Findings(calibration.ece_gate(assessment, context.policy.ece.threshold, blocking),
                 headline)


def _reliability(context: SuiteContext, blocking: bool) -> Findings:
    if not context.classifier or not context.predicted:
        why = NEEDS_A_CLASSIFIER if not context.classifier else context.no_predictions
        return Findings(skipped("reliability", blocking, why))
    settings = context.policy.reliability
    return Findings(calibration.reliability_gate(context.assessment, settings.max_gap,
                                              settings.min_bin_count, blocking))


def _conformal(context: SuiteContext, blocking: bool) -> Findings:
    if not context.predicted:
        return Findings(skipped("conformal", blocking, context.no_predictions))
    report = _coverage(context)
    return Findings(conformal.conformal_gate(report, context.policy.conformal.tolerance, blocking),
                 {"coverage": report.coverage, "coverage_mean_size": report.mean_size})


def _coverage(context: SuiteContext) -> conformal.CoverageReport:
    summary, policy = context.inputs.summary, context.policy
    if summary is not None:
        if summary.coverage is None:
            raise ValueError("the summarised holdout has no coverage counts")
        settings = policy.conformal
        method = settings.classifier_score + ("-mondrian" if settings.mondrian else "")
        return conformal.coverage_from_counts(summary.coverage, method, settings.level,
                                              policy.confidence_level, context.inputs.class_names)
    labels, scores = context.predictions()
    return coverage_report(context.policy, context.inputs, labels, scores)


def coverage_report(policy: GatePolicy, inputs: SuiteInputs, labels: np.ndarray,
                    scores: np.ndarray) -> conformal.CoverageReport:
    """The conformal gate's coverage of the candidate's `scores` against `labels`."""
    settings, outputs = policy.conformal, inputs.candidate
    ordered = settings.split == "ordered"
    calibrate = inputs.calibration_rows if settings.split == "column" else None
    if policy.task == "regression":
        return conformal.regression_coverage(
            labels, scores, score=settings.regression_score,
            difficulty=outputs.difficulty, lower=outputs.lower, upper=outputs.upper,
            level=settings.level, calibration_fraction=settings.calibration_fraction,
            seed=policy.seed, confidence_level=policy.confidence_level, ordered=ordered,
            calibrate=calibrate)
    return conformal.classifier_coverage(
        labels, scores, score=settings.classifier_score,
        mondrian=settings.mondrian, class_names=inputs.class_names,
        level=settings.level, calibration_fraction=settings.calibration_fraction,
        seed=policy.seed, confidence_level=policy.confidence_level, ordered=ordered,
        calibrate=calibrate)


def _comparison(context: SuiteContext, blocking: bool) -> Findings:
    if not context.predicted:
        return Findings(skipped("comparison", blocking, context.no_predictions))
    if context.inputs.summary is not None:
        return Findings(skipped("comparison", blocking, SUMMARISED_COMPARISON))
    headline = {}
    for found in context.comparisons:
        headline[found.key] = found.candidate
        if found.champion is not None:
            headline[f"champion_{found.key}"] = found.champion
    if context.has_champion and not context.champion_ok:
        champion = context.inputs.champion
        why = champion.error if champion is not None else "no predictions"
        return Findings(GateResult("comparison", INCONCLUSIVE, blocking,
                                detail=f"the champion v{context.inputs.champion_version} could "
                                       f"not predict on the holdout: {why}"), headline)
    return Findings(comparison.comparison_gate(context.comparisons, blocking), headline)


def _drift(context: SuiteContext, blocking: bool) -> Findings:
    inputs, settings = context.inputs, context.policy.drift
    if inputs.reference_error is not None:
        return Findings(GateResult("drift", FAIL, blocking,
                                detail=f"reference data: {inputs.reference_error}"))
    if inputs.summary is not None and inputs.summary.drift is not None:
        drifts = [drift.psi_from_counts(counts, settings.epsilon)
                  for counts in inputs.summary.drift]
        return _drift_findings(drifts, settings, blocking)
    if inputs.reference is None or not context.have_data:
        why = ("no reference data configured" if inputs.reference is None
               else context.no_predictions)
        return Findings(skipped("drift", blocking, why))
    columns = [c for c in inputs.holdout.columns
               if c in inputs.reference.columns and c != context.policy.label_column]
    drifts = drift.drift_report(inputs.reference, inputs.holdout, columns,
                                settings.categorical_columns, settings.n_bins, settings.epsilon,
                                ks=settings.ks_test)
    return _drift_findings(drifts, settings, blocking)


def _drift_findings(drifts: list[drift.FeatureDrift], settings: DriftGate,
                    blocking: bool) -> Findings:
    result = drift.drift_gate(drifts, settings.psi_warn, settings.psi_fail, blocking,
                              settings.ks_warn, settings.js_warn)
    return Findings(result, {"max_psi": result.observed} if result.observed is not None else {})


def _fairness(context: SuiteContext, blocking: bool) -> Findings:
    policy, inputs = context.policy, context.inputs
    if policy.sensitive_column is None:
        return Findings(skipped("fairness", blocking, "no sensitive column configured"))
    if policy.task != "binary_classification":
        return Findings(skipped("fairness", blocking,
                             "fairness differences need a binary classifier"))
    if not context.predicted:
        return Findings(skipped("fairness", blocking, context.no_predictions))
    if inputs.summary is not None and inputs.summary.confusion is not None:
        confusion = inputs.summary.confusion
    elif inputs.summary is None and inputs.sensitive is not None:
        labels, candidate_scores = context.predictions()
        scores = np.asarray(candidate_scores)
        positive = ((scores[:, 1] if scores.ndim == 2 else scores)
                    >= policy.fairness.decision_threshold)
        confusion = fairness.group_confusion(labels, positive, inputs.sensitive)
    else:
        return Findings(skipped("fairness", blocking, "no sensitive column configured"))
    report = fairness.fairness_from_confusion(confusion)
    return Findings(fairness.fairness_gate(report,
                                        policy.fairness.max_demographic_parity_difference,
                                        policy.fairness.max_equalized_odds_difference, blocking),
                 {"demographic_parity_difference": report.demographic_parity_difference,
                  "equalized_odds_difference": report.equalized_odds_difference})


def _latency(context: SuiteContext, blocking: bool) -> Findings:
    inputs, settings = context.inputs, context.policy.latency
    result = latency.latency_gate(
        inputs.candidate_latency, inputs.champion_latency, settings.max_p99_ms,
        settings.max_p99_ratio, settings.ratio_floor_ms, blocking,
        why_missing=(context.no_predictions if not context.predicted
                     else "latency was not measured"))
    headline = {}
    if inputs.candidate_latency is not None:
        headline["p99_ms"] = inputs.candidate_latency.p99_ms
        if inputs.champion_latency is not None:
            headline["champion_p99_ms"] = inputs.champion_latency.p99_ms
    return Findings(result, headline)


GATES: tuple[Gate, ...] = (
    Gate("lineage", "lineage", _lineage),
    Gate("schema", "schema_", _schema),
    Gate("ece", "ece", _ece),
    Gate("reliability", "reliability", _reliability),
    Gate("conformal", "conformal", _conformal),
    Gate("comparison", "comparison", _comparison),
    Gate("drift", "drift", _drift),
    Gate("fairness", "fairness", _fairness),
    Gate("latency", "latency", _latency),
)
GATE_NAMES = tuple(gate.name for gate in GATES)
