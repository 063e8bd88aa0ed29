"""Group fairness over one sensitive column, as fairlearn defines it (fairlearn.metrics):

- demographic parity difference: max_g - min_g of the selection rate P(yhat = 1 | A = g);
- equalized odds difference: the larger of the between-group differences (max - min) of the true
  positive rate P(yhat = 1 | y = 1, A = g) and of the false positive rate
  P(yhat = 1 | y = 0, A = g).

yhat = 1[score >= decision_threshold]. Missing values of the sensitive column form their own
group. A rate that is undefined in a group (no positives, or no negatives, there) leaves that group
out of that rate's difference, and the evidence says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from shared.gates.results import FAIL, PASS, GateResult, skipped
from shared.gates.summaries import GroupConfusion


@dataclass(frozen=True)
class FairnessReport:
    demographic_parity_difference: float
    equalized_odds_difference: float
    groups: list[dict[str, Any]]


def _spread(rates: np.ndarray) -> float:
    defined = rates[np.isfinite(rates)]
    return float(defined.max() - defined.min()) if defined.size else 0.0


def group_confusion(labels: ArrayLike, predicted_positive: ArrayLike,
                    sensitive: ArrayLike) -> GroupConfusion:
    """The per-group confusion counts (groups in order of appearance, missing as None)."""
    import pandas as pd

    codes, names = pd.factorize(np.asarray(sensitive), use_na_sentinel=False)
    k = len(names)
    # group * 4 + predicted * 2 + actual, so one bincount holds the confusion counts; the
    # small part is built in int8 and added in place (no full-width temporaries)
    cell = np.asarray(predicted_positive, dtype=bool).view(np.int8) * np.int8(2)
    cell += np.asarray(labels) == 1
    key = codes.astype(np.intp, copy=False)
    key <<= 2
    key += cell
    confusion = np.bincount(key, minlength=4 * k).reshape(k, 2, 2)  # group, predicted, actual
    return GroupConfusion(tuple(None if pd.isna(name) else name for name in names), confusion)


def fairness_report(labels: ArrayLike, predicted_positive: ArrayLike,
                    sensitive: ArrayLike) -> FairnessReport:
    return fairness_from_confusion(group_confusion(labels, predicted_positive, sensitive))


def fairness_from_confusion(summary: GroupConfusion) -> FairnessReport:
    confusion = summary.counts
    size = confusion.sum(axis=(1, 2))
    selected = confusion[:, 1, :].sum(axis=1)
    positives = confusion[:, :, 1].sum(axis=1)
    negatives = size - positives
    true_positives, false_positives = confusion[:, 1, 1], confusion[:, 1, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        selection_rate = selected / size
        true_positive_rate = np.where(positives > 0, true_positives / positives, np.nan)
        false_positive_rate = np.where(negatives > 0, false_positives / negatives, np.nan)
    groups = [{"group": "missing" if name is None else str(name), "n": int(size[g]),
               "selection_rate": float(selection_rate[g]),
               "true_positive_rate": float(true_positive_rate[g]),
               "false_positive_rate": float(false_positive_rate[g])}
              for g, name in enumerate(summary.groups)]
    return FairnessReport(
        demographic_parity_difference=_spread(selection_rate),
        equalized_odds_difference=max(_spread(true_positive_rate),
                                      _spread(false_positive_rate)),
        groups=groups)


def fairness_gate(report: FairnessReport | None, max_demographic_parity_difference: float,
                  max_equalized_odds_difference: float, blocking: bool,
                  why_missing: str = "no sensitive column configured") -> GateResult:
    if report is None:
        return skipped("fairness", blocking, why_missing)
    problems = []
    if report.demographic_parity_difference > max_demographic_parity_difference:
        problems.append(f"demographic parity difference {report.demographic_parity_difference:.3f}"
                        f" > {max_demographic_parity_difference}")
    if report.equalized_odds_difference > max_equalized_odds_difference:
        problems.append(f"equalized odds difference {report.equalized_odds_difference:.3f} > "
                        f"{max_equalized_odds_difference}")
    detail = "; ".join(problems) or (
        f"demographic parity difference {report.demographic_parity_difference:.3f}, equalized "
        f"odds difference {report.equalized_odds_difference:.3f} across "
        f"{len(report.groups)} groups")
    return GateResult("fairness", FAIL if problems else PASS, blocking,
                      observed=max(report.demographic_parity_difference,
                                   report.equalized_odds_difference),
                      threshold=min(max_demographic_parity_difference,
                                    max_equalized_odds_difference),
                      detail=detail,
                      evidence={"demographic_parity_difference":
                                report.demographic_parity_difference,
                                "equalized_odds_difference": report.equalized_odds_difference,
                                "max_demographic_parity_difference":
                                max_demographic_parity_difference,
                                "max_equalized_odds_difference": max_equalized_odds_difference,
                                "groups": report.groups})
