"""What several gates (and the report) share, worked out once before any gate runs: whether there
are predictions to judge, the candidate's calibration, the champion's, and the metric comparisons.

Each expensive value is computed only when a gate that uses it is enabled, exactly as often as
before the gates were a table: once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from shared.gates import calibration, comparison
from shared.gates.calibration import CalibrationAssessment, ReliabilityTable
from shared.gates.inputs import SuiteInputs
from shared.gates.policy import GatePolicy


@dataclass(frozen=True)
class SuiteContext:
    inputs: SuiteInputs
    policy: GatePolicy
    classifier: bool
    have_data: bool  # the holdout and its labels were read
    predicted: bool  # ... and the candidate predicted on it
    no_predictions: str  # why not, for the gates that are skipped
    has_champion: bool
    champion_ok: bool  # there is a champion and it predicted on the holdout
    assessment: CalibrationAssessment | None = None
    candidate_table: ReliabilityTable | None = None  # the diagram's (top-label for classwise)
    champion_table: ReliabilityTable | None = None
    champion_ece: float | None = None
    comparisons: list[comparison.MetricComparison] = field(default_factory=list)

    def predictions(self) -> tuple[np.ndarray, np.ndarray]:
        """The holdout's labels and the candidate's scores, for the code that runs only when
        `predicted` (which says both are there)."""
        labels, scores = self.inputs.labels, self.inputs.candidate.scores
        if labels is None or scores is None:
            raise ValueError(f"no predictions to judge: {self.no_predictions}")
        return labels, scores

    @property
    def champion_scores(self) -> np.ndarray | None:
        """The champion's scores on the holdout when `champion_ok`, else None."""
        champion = self.inputs.champion
        return champion.scores if self.champion_ok and champion is not None else None


def suite_context(inputs: SuiteInputs, policy: GatePolicy) -> SuiteContext:
    summarised = inputs.summary is not None
    have_data = inputs.data_error is None and (inputs.labels is not None or summarised)
    predicted = have_data and inputs.candidate.error is None and (
        inputs.candidate.scores is not None or summarised)
    has_champion = inputs.champion_version is not None
    base = SuiteContext(
        inputs=inputs, policy=policy, classifier=policy.task != "regression",
        have_data=have_data, predicted=predicted,
        no_predictions=(f"the evaluation data is unavailable: {inputs.data_error}"
                        if not have_data else
                        f"the candidate could not predict: {inputs.candidate.error}"),
        has_champion=has_champion,
        champion_ok=(has_champion and inputs.champion is not None
                     and inputs.champion.error is None and inputs.champion.scores is not None))
    return _with_comparisons(_with_calibration(base))


def _with_calibration(context: SuiteContext) -> SuiteContext:
    policy = context.policy
    ece_enabled = policy.ece.enabled
    if not (context.classifier and context.predicted
            and (ece_enabled or policy.reliability.enabled)):
        return context
    summary = context.inputs.summary
    if summary is not None:  # the champion is not scored on a summarised holdout
        assessment = calibration.assess_tables(summary.calibration, summary.calibration_kind,
                                               policy.confidence_level, policy.n_bootstrap,
                                               policy.seed)
        return replace(context, assessment=assessment,
                       candidate_table=summary.diagram or assessment.primary_table)
    labels, scores = context.predictions()
    assessment = calibration.assess_calibration(
        labels, scores, policy.ece.kind, policy.ece.n_bins,
        policy.ece.binning, policy.confidence_level, policy.n_bootstrap, policy.seed)
    if not ece_enabled:  # only the ECE gate draws the diagram
        return replace(context, assessment=assessment)
    candidate_table = (assessment.primary_table if assessment.kind != "classwise" else
                       _tables(labels, scores, "top_label", policy)[0])
    champion_table: ReliabilityTable | None = None
    champion_ece: float | None = None
    champion_scores = context.champion_scores
    if champion_scores is not None:
        champion_table, champion_ece = _champion_calibration(
            labels, champion_scores, assessment.kind, policy)
    return replace(context, assessment=assessment, candidate_table=candidate_table,
                    champion_table=champion_table, champion_ece=champion_ece)


def _with_comparisons(context: SuiteContext) -> SuiteContext:
    if not (context.policy.comparison.enabled and context.predicted
            and context.inputs.summary is None):
        return context
    policy = context.policy
    labels, scores = context.predictions()
    return replace(context, comparisons=comparison.compare_metrics(
        policy.task, labels, scores, context.champion_scores, policy.metric_specs(),
        policy.confidence_level, policy.n_bootstrap, policy.seed))


def _champion_calibration(labels: np.ndarray, scores: np.ndarray, kind: str,
                          policy: GatePolicy) -> tuple[ReliabilityTable, float]:
    """The champion's table for the diagram (top-label when the gate is classwise) and its ECE
    of the gate's kind."""
    of_kind = _tables(labels, scores, kind, policy)
    shown = of_kind[0] if kind != "classwise" else _tables(labels, scores, "top_label", policy)[0]
    return shown, float(np.mean([table.ece for table in of_kind]))


def _tables(labels: np.ndarray, scores: np.ndarray, kind: str,
            policy: GatePolicy) -> list[ReliabilityTable]:
    return [calibration.reliability_table(c, o, policy.ece.n_bins, policy.ece.binning)
            for _, c, o in calibration.calibration_tracks(labels, scores, kind)]
