"""The evaluation data and the models' predictions on it.

- `read_table(path, format)`: a local path or `s3://bucket/key`, parquet or CSV (`auto` decides
  by the suffix: .parquet/.pq, .csv, .csv.gz). S3 is read with boto3 and its usual configuration
  (credentials chain, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL); MLFLOW_S3_ENDPOINT_URL, when set,
  is used as the endpoint as MLflow itself does.
- `model_outputs(model, features, task, ...)`: a pyfunc model's predictions as `ModelOutputs`.
  Classifiers must give probabilities: pyfunc `predict` returning an (n, K) array or DataFrame
  (e.g. `mlflow.sklearn.log_model(..., pyfunc_predict_fn="predict_proba")`), a positive-class
  probability (n,), or the underlying model (`get_raw_model()`) offering `predict_proba`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from shared.foundation import runtime
from shared.gates.inputs import ModelOutputs


class EvaluationDataError(ValueError):
    """The evaluation data could not be read, or does not fit the policy."""


def _format_of(path: str, declared: str) -> str:
    if declared != "auto":
        return declared
    lowered = path.lower()
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith((".csv", ".csv.gz")):
        return "csv"
    raise EvaluationDataError(f"{path}: cannot tell the format from the name; set format to "
                              f"'parquet' or 'csv'")


def _s3_bytes(path: str) -> bytes:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = path[len("s3://"):].partition("/")
    if not bucket or not key:
        raise EvaluationDataError(f"{path}: an S3 path needs s3://bucket/key")
    endpoint = runtime.settings().mlflow_s3_endpoint_url
    try:
        body = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=key)
        return body["Body"].read()
    except (BotoCoreError, ClientError) as exc:
        raise EvaluationDataError(f"{path}: {exc}") from exc


def read_table(path: str, format: str = "auto"):
    import pandas as pd

    kind = _format_of(path, format)
    if path.startswith("s3://"):
        source: Any = io.BytesIO(_s3_bytes(path))
    elif "://" in path:
        raise EvaluationDataError(f"{path}: only local paths and s3:// are supported")
    else:
        if not Path(path).exists():
            raise EvaluationDataError(f"{path}: no such file")
        source = path
    try:
        if kind == "parquet":
            return pd.read_parquet(source)
        return pd.read_csv(source, compression="gzip" if path.lower().endswith(".gz") else None)
    except Exception as exc:  # the readers' own errors say what is wrong with the file
        raise EvaluationDataError(f"{path}: not readable as {kind}: {exc}") from exc


def feature_columns(frame, input_names: list[str] | None, configured: list[str] | None,
                    label_column: str, sensitive_column: str | None) -> list[str]:
    """Configured columns, else the signature's input names, else every other column."""
    if configured:
        chosen = list(configured)
    elif input_names:
        chosen = [name for name in input_names if name in frame.columns]
    else:
        chosen = [c for c in frame.columns if c not in (label_column, sensitive_column)]
    missing = [c for c in (configured or []) if c not in frame.columns]
    if missing:
        raise EvaluationDataError(f"feature columns not in the evaluation data: {missing}")
    return chosen


def _raw_model(model):
    try:
        return model.get_raw_model()
    except Exception:  # flavours without a raw model: only pyfunc predict is available
        return None


def _classes_of(model, output) -> list | None:
    raw = _raw_model(model)
    classes = getattr(raw, "classes_", None)
    if classes is not None:
        return list(np.asarray(classes).tolist())
    columns = getattr(output, "columns", None)
    return list(columns) if columns is not None else None


def _looks_like_probabilities(values: np.ndarray) -> bool:
    return (values.dtype.kind == "f" and values.size > 0 and np.nanmin(values) >= 0
            and np.nanmax(values) <= 1)


def classifier_probabilities(model, features) -> tuple[np.ndarray, list | None]:
    output = model.predict(features)
    values = np.asarray(output.to_numpy() if hasattr(output, "to_numpy") else output)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim == 2 and _looks_like_probabilities(values.astype(float, copy=False)):
        return values.astype(float), _classes_of(model, output)
    if values.ndim == 1 and _looks_like_probabilities(values) and \
            not np.all(np.isin(values, (0.0, 1.0))):
        return values.astype(float), _classes_of(model, None)
    raw = _raw_model(model)
    if raw is not None and hasattr(raw, "predict_proba"):
        return np.asarray(raw.predict_proba(features), dtype=float), _classes_of(model, None)
    raise ValueError("the model returns class labels, not probabilities: return probabilities "
                     "from predict (mlflow.sklearn.log_model(..., pyfunc_predict_fn="
                     "'predict_proba'))")


def _column(output, name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    if not hasattr(output, "columns") or name not in output.columns:
        raise ValueError(f"the model's output has no column {name!r}")
    return np.asarray(output[name], dtype=float)


def regression_outputs(model, features, conformal_policy) -> ModelOutputs:
    output = model.predict(features)
    lower = _column(output, conformal_policy.lower_output
                    if conformal_policy.regression_score == "cqr" else None)
    upper = _column(output, conformal_policy.upper_output
                    if conformal_policy.regression_score == "cqr" else None)
    difficulty = _column(output, conformal_policy.difficulty_output
                         if conformal_policy.regression_score == "normalized" else None)
    named = {c for c in (conformal_policy.lower_output, conformal_policy.upper_output,
                         conformal_policy.difficulty_output) if c}
    if hasattr(output, "columns"):
        rest = [c for c in output.columns if c not in named]
        if rest:
            point = np.asarray(output[rest[0]], dtype=float)
        elif lower is not None and upper is not None:
            point = (lower + upper) / 2
        else:
            raise ValueError("the model's output has no point-prediction column")
    else:
        point = np.asarray(output, dtype=float).reshape(len(features), -1)[:, 0]
    return ModelOutputs(scores=point, lower=lower, upper=upper, difficulty=difficulty)


def encode_labels(labels, classes: list | None, n_columns: int) -> tuple[np.ndarray, list[str]]:
    """Class indices of the holdout labels in the model's class order."""
    import pandas as pd

    values = pd.Series(labels)
    if values.isna().any():
        raise EvaluationDataError(f"the label column has {int(values.isna().sum())} missing "
                                  f"values")
    if classes is None:
        present = sorted(values.unique().tolist())
        classes = present if len(present) == n_columns else list(range(n_columns))
    if len(classes) != n_columns:
        raise EvaluationDataError(f"the model gives {n_columns} probabilities but names "
                                  f"{len(classes)} classes")
    lookup = {value: index for index, value in enumerate(classes)}
    lookup.update({str(value): index for index, value in enumerate(classes)})
    codes = values.map(lambda v: lookup.get(v, lookup.get(str(v), -1))).to_numpy(np.intp)
    unknown = sorted(set(values[codes < 0].astype(str)))
    if unknown:
        raise EvaluationDataError(f"holdout labels {unknown[:5]} are not among the model's "
                                  f"classes {classes}")
    return codes, [str(c) for c in classes]


def align_probabilities(probabilities: np.ndarray, classes: list | None,
                        target: list[str]) -> np.ndarray:
    """Reorder a model's probability columns to `target` class names."""
    if classes is None:
        if probabilities.ndim == 1 or probabilities.shape[1] == len(target):
            return probabilities
        raise ValueError(f"gives {probabilities.shape[1]} probabilities for {len(target)} "
                         f"classes")
    names = [str(c) for c in classes]
    if sorted(names) != sorted(target):
        raise ValueError(f"predicts classes {names}, the candidate {target}")
    return probabilities[:, [names.index(name) for name in target]]


def positive_scores(probabilities: np.ndarray, task: str) -> np.ndarray:
    """Binary tasks keep P(second class) as a vector; multiclass keeps the matrix."""
    if task == "binary_classification":
        if probabilities.ndim == 1:
            return probabilities
        if probabilities.shape[1] != 2:
            raise ValueError(f"a binary task, but the model gives {probabilities.shape[1]} "
                             f"class probabilities")
        return np.ascontiguousarray(probabilities[:, 1])
    if probabilities.ndim == 1:
        raise ValueError("a multiclass task, but the model gives one probability per row")
    return probabilities
