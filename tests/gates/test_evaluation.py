"""Loading the evaluation data (local files and S3 on moto) and turning predictions into arrays."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from shared.dev import devstack
from shared.gates import evaluation
from shared.gates.evaluation import (
    EvaluationDataError,
    align_probabilities,
    classifier_probabilities,
    encode_labels,
    feature_columns,
    positive_scores,
    read_table,
)

FRAME = pd.DataFrame({"amount": [1.5, 2.0, 3.25], "country": ["nl", "fr", "de"],
                      "label": [0, 1, 1]})


def test_local_parquet_and_csv(tmp_path):
    FRAME.to_parquet(tmp_path / "holdout.parquet")
    FRAME.to_csv(tmp_path / "holdout.csv", index=False)
    FRAME.to_csv(tmp_path / "holdout.csv.gz", index=False)
    FRAME.to_csv(tmp_path / "holdout.data", index=False)
    for name in ("holdout.parquet", "holdout.csv", "holdout.csv.gz"):
        pd.testing.assert_frame_equal(read_table(str(tmp_path / name)), FRAME,
                                      check_dtype=False)
    pd.testing.assert_frame_equal(read_table(str(tmp_path / "holdout.data"), "csv"), FRAME,
                                  check_dtype=False)
    with pytest.raises(EvaluationDataError, match="cannot tell the format"):
        read_table(str(tmp_path / "holdout.data"))
    with pytest.raises(EvaluationDataError, match="no such file"):
        read_table(str(tmp_path / "missing.parquet"))
    with pytest.raises(EvaluationDataError, match="not readable as parquet"):
        read_table(str(tmp_path / "holdout.csv"), "parquet")
    with pytest.raises(EvaluationDataError, match="only local paths and s3://"):
        read_table("https://example.invalid/holdout.parquet")


def test_s3_on_moto(moto_s3, monkeypatch):
    import boto3

    for key, value in devstack.mlflow_client_env(moto_s3.url).items():
        monkeypatch.setenv(key, value)
    s3 = boto3.client("s3", endpoint_url=moto_s3.url)
    s3.create_bucket(Bucket="holdouts")
    buffer = io.BytesIO()
    FRAME.to_parquet(buffer)
    s3.put_object(Bucket="holdouts", Key="fraud/holdout.parquet", Body=buffer.getvalue())
    s3.put_object(Bucket="holdouts", Key="fraud/holdout.csv",
                  Body=FRAME.to_csv(index=False).encode())
    pd.testing.assert_frame_equal(read_table("s3://holdouts/fraud/holdout.parquet"), FRAME)
    pd.testing.assert_frame_equal(read_table("s3://holdouts/fraud/holdout.csv"), FRAME,
                                  check_dtype=False)
    with pytest.raises(EvaluationDataError, match="s3://holdouts/absent.parquet"):
        read_table("s3://holdouts/absent.parquet")
    with pytest.raises(EvaluationDataError, match="needs s3://bucket/key"):
        read_table("s3://holdouts.parquet")


def test_feature_columns():
    assert feature_columns(FRAME, None, None, "label", None) == ["amount", "country"]
    assert feature_columns(FRAME, ["amount"], None, "label", None) == ["amount"]
    assert feature_columns(FRAME, None, ["country"], "label", None) == ["country"]
    assert feature_columns(FRAME, None, None, "label", "country") == ["amount"]
    with pytest.raises(EvaluationDataError, match="not in the evaluation data"):
        feature_columns(FRAME, None, ["age"], "label", None)


def test_labels_in_the_model_class_order():
    codes, names = encode_labels(np.array(["no", "yes", "no"]), ["no", "yes"], 2)
    assert codes.tolist() == [0, 1, 0] and names == ["no", "yes"]
    codes, names = encode_labels(np.array([3, 1, 3]), None, 2)
    assert codes.tolist() == [1, 0, 1] and names == ["1", "3"]
    with pytest.raises(EvaluationDataError, match="not among the model's classes"):
        encode_labels(np.array([0, 2]), [0, 1], 2)
    with pytest.raises(EvaluationDataError, match="missing values"):
        encode_labels(np.array([0, None], dtype=object), [0, 1], 2)


def test_probability_alignment():
    proba = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert align_probabilities(proba, ["b", "a"], ["a", "b"]).tolist() == [[0.8, 0.2],
                                                                            [0.4, 0.6]]
    with pytest.raises(ValueError, match="predicts classes"):
        align_probabilities(proba, ["x", "y"], ["a", "b"])
    assert positive_scores(proba, "binary_classification").tolist() == [0.8, 0.4]
    with pytest.raises(ValueError, match="gives 3 class probabilities"):
        positive_scores(np.ones((2, 3)) / 3, "binary_classification")


class LabelsOnly:
    """A pyfunc-like model whose predict gives labels and that has no raw model."""

    def predict(self, features):
        return np.array([0, 1, 1])

    def get_raw_model(self):
        raise AttributeError("no raw model")


def test_a_model_that_only_returns_labels_is_explained():
    with pytest.raises(ValueError, match="pyfunc_predict_fn='predict_proba'"):
        classifier_probabilities(LabelsOnly(), FRAME)


def test_probabilities_from_a_dataframe_output():
    class Frames:
        def predict(self, features):
            return pd.DataFrame({"no": [0.3, 0.9], "yes": [0.7, 0.1]})

    proba, classes = evaluation.classifier_probabilities(Frames(), FRAME.head(2))
    assert classes == ["no", "yes"] and proba.tolist() == [[0.3, 0.7], [0.9, 0.1]]


def test_regression_outputs_by_column():
    from shared.gates.policy import ConformalGate

    class Quantiles:
        def predict(self, features):
            return pd.DataFrame({"median": [1.0, 2.0], "q05": [0.5, 1.0], "q95": [1.5, 3.0]})

    cqr = ConformalGate(regression_score="cqr", lower_output="q05", upper_output="q95")
    found = evaluation.regression_outputs(Quantiles(), FRAME.head(2), cqr)
    assert found.scores.tolist() == [1.0, 2.0]
    assert found.lower.tolist() == [0.5, 1.0] and found.upper.tolist() == [1.5, 3.0]
    normalized = ConformalGate(regression_score="normalized", difficulty_output="sigma")
    with pytest.raises(ValueError, match="no column 'sigma'"):
        evaluation.regression_outputs(Quantiles(), FRAME.head(2), normalized)

    class Points:
        def predict(self, features):
            return np.array([[3.0], [4.0]])

    assert evaluation.regression_outputs(Points(), FRAME.head(2),
                                         ConformalGate()).scores.tolist() == [3.0, 4.0]
