"""The reference distribution a served version is monitored against, saved when it passed its
gates: per input feature the reference's quantile bins (numeric) or categories, with their
counts; the same for the model's score; and the reference accuracy and ECE.

Only bins and counts are kept (not the data), so the reference is small enough for a state-table
row and an MLflow artifact, and PSI of a window is computed against it without the training set.
Binning follows shared/gates/drift.py: numeric bins are the reference's n_bins quantiles (inner
edges e_1..e_{n-1}, duplicate edges merged), a value x falls in bin i when e_{i-1} < x <= e_i,
and missing values have a bin of their own; categories unseen in the reference share an `other`
bin.

    reference = reference_from_frame("fraud", "3", features_df, scores=p_positive, labels=y)
    save_reference(reference, store=ReferenceStore.connect(conn), run_id=gate_report_run_id)
"""

from __future__ import annotations

import base64
import json
import time
import zlib
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from shared.foundation.state import StateTable, Table, safe_row_key
from shared.gates.calibration import expected_calibration_error, sorted_quantiles
from shared.gates.drift import population_stability_index

TABLE = "gatehousereferences"
ARTIFACT_PATH = "gatehouse/reference.json"
MAX_CATEGORIES = 50
OTHER = "__other__"
_CHUNK = 30_000  # characters per table property (the limit is 64 KiB of UTF-16)


class FeatureReference(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["numeric", "categorical"]
    edges: list[float] = Field(default_factory=list, description="inner quantile edges")
    categories: list[str] = Field(default_factory=list)
    counts: list[float] = Field(description="per bin; the last bin counts missing values")

    @property
    def n(self) -> float:
        return float(sum(self.counts))

    def bin_counts(self, values) -> np.ndarray:
        """Counts of `values` on this reference's bins (same order as `counts`)."""
        if self.kind == "numeric":
            array = _as_float(values)
            missing = np.isnan(array)
            index = np.searchsorted(np.asarray(self.edges, float), array[~missing], side="left")
            counts = np.bincount(index, minlength=len(self.edges) + 1).astype(float)
            return np.append(counts, float(missing.sum()))
        position = {category: i for i, category in enumerate(self.categories)}
        counts = np.zeros(len(self.categories) + 2)  # categories, other, missing
        for value in values:
            if _is_missing(value):
                counts[-1] += 1
            else:
                counts[position.get(str(value), len(self.categories))] += 1
        return counts

    def psi(self, values, epsilon: float = 1e-4) -> float:
        current = self.bin_counts(values)
        if current.sum() == 0:
            raise ValueError("no values to compare with the reference")
        return population_stability_index(np.asarray(self.counts, float), current, epsilon)


class ReferenceDistribution(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    version: str
    created_at: float
    n_rows: int
    features: dict[str, FeatureReference]
    prediction: FeatureReference | None = None
    decision_threshold: float = 0.5
    accuracy: float | None = None
    labelled_rows: int | None = Field(None, description="rows the accuracy was measured on")
    ece: float | None = None

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> ReferenceDistribution:
        return cls.model_validate_json(text)


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _as_float(values) -> np.ndarray:
    """Values as floats, missing ones (None, NaN) as NaN; ValueError/TypeError for text or
    anything else that is not a number."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(float)
    return np.array(values if isinstance(values, (list, np.ndarray)) else list(values),
                    dtype=float)


def numeric_reference(values, n_bins: int = 10) -> FeatureReference:
    array = _as_float(values)
    valid = np.sort(array[~np.isnan(array)])
    if len(valid) == 0:
        raise ValueError("a numeric reference needs at least one non-missing value")
    inner = np.unique(sorted_quantiles(valid, np.arange(1, n_bins) / n_bins))
    counts = np.diff(np.concatenate([[0], np.searchsorted(valid, inner, side="right"),
                                     [len(valid)]])).astype(float)
    return FeatureReference(kind="numeric", edges=[float(e) for e in inner],
                            counts=[*counts.tolist(), float(len(array) - len(valid))])


def categorical_reference(values) -> FeatureReference:
    present = [str(v) for v in values if not _is_missing(v)]
    names, counts = np.unique(np.array(present, dtype=object), return_counts=True) \
        if present else (np.array([]), np.array([]))
    order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
    kept = [str(names[i]) for i in order]
    other = float(counts.sum() - counts[order].sum()) if len(counts) else 0.0
    return FeatureReference(kind="categorical", categories=kept,
                            counts=[*(float(counts[i]) for i in order), other,
                                    float(len(values) - len(present))])


def _is_numeric_column(series, categorical: set[str]) -> bool:
    import pandas as pd

    return (series.name not in categorical and pd.api.types.is_numeric_dtype(series.dtype)
            and not pd.api.types.is_bool_dtype(series.dtype))


def reference_from_frame(model_name: str, version: str, features, scores=None, labels=None, *,
                         n_bins: int = 10, categorical_columns=(), decision_threshold: float = 0.5,
                         ece_bins: int = 15, now: float | None = None) -> ReferenceDistribution:
    """A reference from the data the version was judged on: `features` a DataFrame of model
    inputs, `scores` P(positive class) per row (binary classifiers), `labels` 0/1 per row."""
    import pandas as pd

    frame = features if isinstance(features, pd.DataFrame) else pd.DataFrame(features)
    declared = set(categorical_columns)
    columns = {}
    for column in frame.columns:
        series = frame[column]
        columns[str(column)] = (numeric_reference(series.to_numpy(), n_bins)
                                if _is_numeric_column(series, declared)
                                else categorical_reference(series.tolist()))
    prediction = accuracy = ece = labelled_rows = None
    if scores is not None:
        score_array = np.asarray(scores, dtype=float)
        prediction = numeric_reference(score_array, n_bins)
        if labels is not None:
            label_array = np.asarray(labels).astype(int)
            accuracy = float(np.mean((score_array >= decision_threshold) == (label_array == 1)))
            labelled_rows = len(label_array)
            ece = expected_calibration_error(label_array, score_array, kind="binary",
                                             n_bins=ece_bins)
    return ReferenceDistribution(model_name=model_name, version=str(version),
                                 created_at=time.time() if now is None else now,
                                 n_rows=len(frame), features=columns, prediction=prediction,
                                 decision_threshold=decision_threshold, accuracy=accuracy,
                                 labelled_rows=labelled_rows, ece=ece)


class ReferenceStore:
    """References on the state table: partition = model, row = version; the JSON is compressed
    and split over properties to stay within Azure Tables' property size."""

    def __init__(self, table: Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> ReferenceStore:
        return cls(StateTable(connection_string, TABLE))

    @staticmethod
    def _keys(model_name: str, version: str) -> tuple[str, str]:
        return safe_row_key(model_name)[:40], safe_row_key(str(version))

    def save(self, reference: ReferenceDistribution) -> None:
        packed = base64.b64encode(zlib.compress(reference.to_json().encode("utf-8"))).decode()
        parts = {f"part{i}": packed[start:start + _CHUNK]
                 for i, start in enumerate(range(0, len(packed), _CHUNK))}
        properties = {"model_name": reference.model_name, "version": reference.version,
                      "created_at": reference.created_at, "parts": len(parts), **parts}
        self.table.modify(*self._keys(reference.model_name, reference.version),
                          lambda _: properties)

    def load(self, model_name: str, version: str) -> ReferenceDistribution | None:
        row = self.table.get(*self._keys(model_name, version))
        if row is None:
            return None
        packed = "".join(row.properties[f"part{i}"] for i in range(int(row.properties["parts"])))
        return ReferenceDistribution.from_json(zlib.decompress(base64.b64decode(packed)))


def log_reference(reference: ReferenceDistribution, run_id: str, client=None) -> None:
    """Attach the reference to an MLflow run (the gate report's, or the training run's)."""
    if client is None:
        from mlflow import MlflowClient

        client = MlflowClient()
    client.log_text(run_id, json.dumps(json.loads(reference.to_json()), indent=1), ARTIFACT_PATH)


def load_reference_artifact(run_id: str) -> ReferenceDistribution | None:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{ARTIFACT_PATH}")
    except (MlflowException, OSError):
        return None
    return ReferenceDistribution.from_json(text)


def save_reference(reference: ReferenceDistribution, *, store: ReferenceStore | None = None,
                   run_id: str | None = None, client=None) -> ReferenceDistribution:
    """Keep a version's reference where the monitor finds it: the state table (default: the one
    of AzureWebJobsStorage) and, with `run_id`, an artifact of that MLflow run."""
    if store is None:
        from shared.foundation import runtime

        store = ReferenceStore.connect(runtime.storage_connection())
    store.save(reference)
    if run_id:
        log_reference(reference, run_id, client)
    return reference
