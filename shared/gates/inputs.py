"""What the suite judges: the holdout, both models' predictions on it and the facts read from the
registry (pure data; shared/gates/gathering.py reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.gates.latency import LatencyStats
from shared.gates.summaries import HoldoutSummary


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
    candidate_latency: LatencyStats | None = None
    champion_latency: LatencyStats | None = None
    data_error: str | None = None
    calibration_rows: np.ndarray | None = None  # conformal split = "column": True calibrates
    # A holdout summarised where it lives (Spark) instead of labels and scores in memory.
    summary: HoldoutSummary | None = None
