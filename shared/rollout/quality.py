"""Model quality in the canary (pure): the challenger's predictions against the champion's on
the same live traffic, binned on the reference's prediction edges (the champion's reference, the
one monitoring judges drift against) and compared with the project's PSI
(shared/gates/drift.py `population_stability_index`, as `FeatureReference.psi` uses it).

A disagreement rate needs both versions to score the same request. Canary routing sends each
request to one version, so there is no such pairing on live traffic and no disagreement is
computed here (`disagreement_rate` stays None until a mirrored/shadow step provides pairs).

    comparison = compare_predictions(reference.prediction, challenger_scores, champion_scores)
    Window(..., predictions=comparison)     # the judge rolls back above max_prediction_psi
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.monitoring.reference import FeatureReference


@dataclass(frozen=True)
class PredictionComparison:
    psi: float                      # challenger's predictions against the champion's
    challenger_predictions: int
    champion_predictions: int
    disagreement_rate: float | None = None  # None: no request scored by both versions

    def figures(self) -> dict[str, float]:
        figures = {"prediction_psi": self.psi,
                   "challenger_predictions": float(self.challenger_predictions),
                   "champion_predictions": float(self.champion_predictions)}
        if self.disagreement_rate is not None:
            figures["prediction_disagreement"] = self.disagreement_rate
        return figures

    def as_dict(self) -> dict[str, Any]:
        return {"psi": self.psi, "challenger_predictions": self.challenger_predictions,
                "champion_predictions": self.champion_predictions,
                "disagreement_rate": self.disagreement_rate}


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
                                int(challenger.sum()), int(champion.sum()))
