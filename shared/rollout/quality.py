"""Model quality in the canary (pure): the challenger's predictions against the champion's on
the same live traffic, binned on the reference's prediction edges (the champion's reference, the
one monitoring judges drift against) and compared with the project's PSI
(shared/gates/drift.py `population_stability_index`, as `FeatureReference.psi` uses it).

A disagreement rate needs both versions to score the same request. Canary routing sends each
request to one version, so on canary traffic there is no such pairing (`disagreement_rate`
stays None); the shadow step mirrors each live request to the challenger, so there every
request is scored by both and the share whose predicted labels differ is judged with a
confidence sequence (`disagreement_bounds`), as anytime-valid as the canary's other evidence.

Where the answers carry a positive-class probability, each version's confidence-based
performance estimate (CBPE, the monitor's delayed-label proxy: the mean of max(p, 1 - p)) is
reported beside them; it is shown, not judged.

    comparison = compare_predictions(reference.prediction, challenger_scores, champion_scores)
    comparison = compare_records(champion_records, challenger_records, reference)  # the shell
    Window(..., predictions=comparison)     # the judge rolls back above max_prediction_psi
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from shared.monitoring.payloads import read_records
from shared.rollout import evidence
from shared.rollout.policy import RolloutPolicy

if TYPE_CHECKING:
    from shared.monitoring.payloads import ScoredRow
    from shared.monitoring.reference import FeatureReference, ReferenceDistribution
    from shared.serving.base import PayloadRecord


@dataclass(frozen=True)
class PredictionComparison:
    psi: float | None               # challenger's predictions against the champion's
    challenger_predictions: int
    champion_predictions: int
    disagreement_rate: float | None = None  # None: no request scored by both versions
    paired: int = 0                 # predictions both versions made on the same request row
    disagreements: int = 0          # ... whose predicted labels differ
    mirrored_requests: int = 0      # requests both versions were given
    challenger_failures: int = 0    # ... that the challenger failed and the champion answered
    champion_failures: int = 0      # ... that the champion failed and the challenger answered
    challenger_cbpe: float | None = None
    champion_cbpe: float | None = None
    bins: int = 0                   # the prediction bins either version fell in

    @property
    def psi_noise(self) -> float:
        """The PSI two samples of one distribution show by chance, about
        (bins - 1) x (1/n1 + 1/n2): what a shift must exceed before it counts."""
        if not self.bins or not self.challenger_predictions or not self.champion_predictions:
            return 0.0
        return (self.bins - 1) * (1 / self.challenger_predictions
                                  + 1 / self.champion_predictions)

    def figures(self) -> dict[str, float]:
        figures = {"challenger_predictions": float(self.challenger_predictions),
                   "champion_predictions": float(self.champion_predictions)}
        if self.psi is not None:
            figures["prediction_psi"] = self.psi
            figures["prediction_psi_noise"] = self.psi_noise
        if self.disagreement_rate is not None:
            figures["prediction_disagreement"] = self.disagreement_rate
            figures["paired_predictions"] = float(self.paired)
        if self.mirrored_requests:
            figures["mirrored_requests"] = float(self.mirrored_requests)
            figures["mirrored_failures"] = float(self.challenger_failures)
            figures["champion_failures"] = float(self.champion_failures)
        for role, value in (("challenger", self.challenger_cbpe),
                            ("champion", self.champion_cbpe)):
            if value is not None:
                figures[f"{role}_cbpe_accuracy"] = value
        return figures

    def as_dict(self) -> dict[str, Any]:
        return {"psi": self.psi, "challenger_predictions": self.challenger_predictions,
                "champion_predictions": self.champion_predictions,
                "disagreement_rate": self.disagreement_rate, "paired": self.paired,
                "disagreements": self.disagreements,
                "mirrored_requests": self.mirrored_requests,
                "challenger_failures": self.challenger_failures,
                "champion_failures": self.champion_failures,
                "challenger_cbpe": self.challenger_cbpe, "champion_cbpe": self.champion_cbpe}


def compare_predictions(reference: FeatureReference, challenger_scores,
                        champion_scores) -> PredictionComparison:
    """PSI of the challenger's predictions (expected: the champion's) on `reference`'s bins."""
    # numpy-backed: imported when first used, off the webhook path's import.
    from shared.gates.drift import population_stability_index

    challenger = reference.bin_counts(challenger_scores)
    champion = reference.bin_counts(champion_scores)
    if challenger.sum() == 0 or champion.sum() == 0:
        raise ValueError("both versions need predictions to compare")
    return PredictionComparison(population_stability_index(champion, challenger),
                                int(challenger.sum()), int(champion.sum()),
                                bins=int(((challenger + champion) > 0).sum()))


def disagreement_bounds(comparison: PredictionComparison, alpha: float) -> evidence.Bounds:
    """Confidence sequence for the disagreement rate (valid at every look)."""
    return evidence.rate_bounds(comparison.disagreements, comparison.paired, alpha)


def prediction_shift(policy: RolloutPolicy, predictions: PredictionComparison | None,
                     floor: int) -> str:
    """Why the challenger's predictions count as unlike the champion's ("" when they do not).

    PSI: a point estimate with a floor on the sample (`floor` predictions per version), not
    anytime-valid evidence; what two samples of one distribution show by chance, about
    (bins - 1) x (1/n1 + 1/n2) (0.04 for 11 bins at 500 each, 0.25 at 80), is taken off before
    it is compared with `max_prediction_psi`, so few predictions do not pass for a shift.
    Disagreement (where both versions scored the same requests): the lower bound of its
    confidence sequence above `max_disagreement_rate`."""
    if predictions is None:
        return ""
    reasons = []
    psi = predictions.psi
    if psi is not None and psi - predictions.psi_noise > policy.max_prediction_psi and min(
            predictions.challenger_predictions, predictions.champion_predictions) >= floor:
        reasons.append(f"prediction PSI {psi:.3f} (less {predictions.psi_noise:.3f} by chance) "
                       f"> max_prediction_psi {policy.max_prediction_psi:g} "
                       f"({predictions.challenger_predictions} challenger / "
                       f"{predictions.champion_predictions} champion predictions)")
    if predictions.paired:
        bounds = disagreement_bounds(predictions, policy.alpha)
        if bounds.lower > policy.max_disagreement_rate:
            reasons.append(f"predicted labels differ on {predictions.disagreements} of "
                           f"{predictions.paired} requests both scored (disagreement at least "
                           f"{bounds.lower:.3f} > max_disagreement_rate "
                           f"{policy.max_disagreement_rate:g})")
    return "; ".join(reasons)


def _label(row: ScoredRow, threshold: float) -> object:
    if row.score is not None:
        return int(row.score >= threshold)
    return row.predicted


def _cbpe(scores: Sequence[float]) -> float | None:
    if not scores:
        return None
    return sum(max(p, 1.0 - p) for p in scores) / len(scores)


def compare_records(champion: Iterable[PayloadRecord], challenger: Iterable[PayloadRecord],
                    reference: ReferenceDistribution | None) -> PredictionComparison | None:
    """The two versions' answers as the payload log (or an inference table) holds them: PSI on
    the reference's prediction bins (where both gave scores and the reference has them),
    disagreement on the request rows both scored, each version's CBPE. None: nothing to
    compare (no readable answer from one of them)."""

    champion, challenger = list(champion), list(challenger)
    champion_rows, challenger_rows = read_records(champion).rows, read_records(challenger).rows
    if not champion_rows or not challenger_rows:
        return None
    champion_scores = [r.score for r in champion_rows if r.score is not None]
    challenger_scores = [r.score for r in challenger_rows if r.score is not None]
    comparison = PredictionComparison(None, len(challenger_rows), len(champion_rows),
                                      challenger_cbpe=_cbpe(challenger_scores),
                                      champion_cbpe=_cbpe(champion_scores))
    if reference is not None and reference.prediction is not None and champion_scores \
            and challenger_scores:
        scored = compare_predictions(reference.prediction, challenger_scores, champion_scores)
        comparison = replace(comparison, psi=scored.psi, bins=scored.bins)
    threshold = reference.decision_threshold if reference is not None else 0.5
    return _paired(comparison, champion, challenger, champion_rows, challenger_rows, threshold)


def _paired(comparison: PredictionComparison, champion: list[PayloadRecord],
            challenger: list[PayloadRecord], champion_rows: list[ScoredRow],
            challenger_rows: list[ScoredRow], threshold: float) -> PredictionComparison:
    """Disagreement and failures on the requests both versions were given (none: unchanged)."""
    champion_ok = {r.request_id: r.ok for r in champion}
    mirrored = [r for r in challenger if r.request_id in champion_ok]
    if not mirrored:
        return comparison
    labels = {row.key: _label(row, threshold) for row in champion_rows}
    pairs = [(labels[row.key], _label(row, threshold)) for row in challenger_rows
             if row.key in labels]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    disagreements = sum(1 for a, b in pairs if a != b)
    return replace(comparison, paired=len(pairs), disagreements=disagreements,
                   disagreement_rate=disagreements / len(pairs) if pairs else None,
                   mirrored_requests=len(mirrored),
                   challenger_failures=sum(1 for r in mirrored
                                           if not r.ok and champion_ok[r.request_id]),
                   champion_failures=sum(1 for r in mirrored
                                         if r.ok and not champion_ok[r.request_id]))


def failure_evidence(comparison: PredictionComparison, policy: RolloutPolicy) -> float:
    """The e-value that the challenger fails mirrored requests more often than the champion
    (by more than `rollback_error_ratio`): on the requests only one of the two failed, a fair
    coin's split when they are alike (the canary's ratio test with a 50% share)."""
    pairs = evidence.RatioSegment(comparison.mirrored_requests, comparison.mirrored_requests,
                                  comparison.challenger_failures, comparison.champion_failures)
    return evidence.worse_evidence((pairs,), policy.rollback_error_ratio)
