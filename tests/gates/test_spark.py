"""The gates on Spark (a real local Spark through Spark Connect) and on numpy judge the same
holdout, scored by the same MLflow model, to the same verdict and figures."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from shared.gates.evaluation import EvaluationDataError
from shared.gates.inputs import ModelOutputs, SuiteInputs
from shared.gates.policy import GatePolicy
from shared.gates.spark import SummaryRequest
from shared.gates.spark_job import DatabricksSummaryJob, main
from shared.gates.suite import run_suite
from shared.gates.summaries import summary_to_dict
from tests.gates.jobs_peer import TOKEN, JobsPeer

ROWS = 24_000  # above calibration.EXACT_LIMIT: both paths take the moment bootstrap
FEATURES = ["f0", "f1", "f2", "f3"]


def frame(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    data = pd.DataFrame({f: rng.normal(shift, 1, n) for f in FEATURES})
    # not a model input, but compared for drift: missing values get their own PSI bin
    data["extra"] = np.where(rng.random(n) < 0.01, np.nan, rng.gamma(2.0, 1.0 + shift, n))
    return data


@pytest.fixture(scope="module")
def logged_model(tmp_path_factory):
    import mlflow

    folder = tmp_path_factory.mktemp("spark-gates")
    rng = np.random.default_rng(7)
    train = frame(rng, 2000, 0.0)[FEATURES]
    labels = (train.f0 + 0.5 * train.f1 + rng.normal(0, 1, len(train)) > 0).astype(int)
    model = LogisticRegression().fit(train, labels)
    # saved as an MLflow model in a folder (no tracking store): its path is the model URI
    mlflow.sklearn.save_model(model, folder / "model", pyfunc_predict_fn="predict_proba",
                              input_example=train.head(3))
    holdout = frame(rng, ROWS, 0.05)
    score = holdout.f0 + 0.5 * holdout.f1 + rng.normal(0, 1, ROWS)
    holdout["label"] = (score > 0).astype(int)
    holdout["group"] = np.array(["a", "b", "c", None], dtype=object)[
        rng.choice(4, ROWS, p=[0.5, 0.3, 0.19, 0.01])]
    holdout["calibrate"] = rng.random(ROWS) < 0.5
    holdout.to_parquet(folder / "holdout.parquet")
    frame(rng, ROWS, 0.0).to_parquet(folder / "reference.parquet")
    return str(folder / "model"), folder, holdout


POLICY = GatePolicy.model_validate({
    "sensitive_column": "group", "lineage": {"enabled": False}, "schema": {"enabled": False},
    "latency": {"enabled": False}, "drift": {"ks_test": False},
    "conformal": {"split": "column", "split_column": "calibrate"},
    "fairness": {"max_demographic_parity_difference": 0.05}})


def numpy_inputs(model_uri: str, folder, holdout: pd.DataFrame) -> SuiteInputs:
    import mlflow

    probabilities = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(holdout[FEATURES]))
    reference = pd.read_parquet(folder / "reference.parquet")
    return SuiteInputs("m", "1", labels=holdout.label.to_numpy(), class_names=["0", "1"],
                       candidate=ModelOutputs(scores=np.ascontiguousarray(probabilities[:, 1])),
                       holdout=holdout.drop(columns=["label"]), feature_columns=FEATURES,
                       reference=reference, sensitive=holdout.group.to_numpy(),
                       calibration_rows=holdout.calibrate.to_numpy())


def close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture
def jobs(spark):
    """The Jobs API peer, running the submitted job file on the local Spark."""
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    def runner(python_file: str, parameters: list[str]) -> tuple[bool, str]:
        assert python_file.endswith("spark_job.py")
        out = io.StringIO()
        main(parameters, spark, out)
        return True, out.getvalue()

    peer = JobsPeer(runner).start()
    client = WorkspaceClient(config=Config(host=peer.url, token=TOKEN, auth_type="pat"))
    yield peer, DatabricksSummaryJob(client, "/Volumes/main/gatehouse/jobs/spark_job.py",
                                     cluster_id="0101-cluster", poll_seconds=0.2)
    peer.stop()


def request_for(model_uri: str, folder, policy: GatePolicy = POLICY) -> SummaryRequest:
    return SummaryRequest(model_uri, str(folder / "holdout.parquet"),
                          policy.model_dump(mode="json", by_alias=True),
                          reference=str(folder / "reference.parquet"))


def test_spark_and_numpy_give_the_same_verdict_and_figures(jobs, logged_model):
    """Through the Databricks job (the Jobs peer runs the job file on the local Spark)."""
    peer, job = jobs
    model_uri, folder, holdout = logged_model
    summary = job(request_for(model_uri, folder), "m/1")
    assert summary.rows == ROWS and peer.submits == 1
    on_spark = run_suite(SuiteInputs("m", "1", class_names=["0", "1"], summary=summary), POLICY)
    on_numpy = run_suite(numpy_inputs(model_uri, folder, holdout), POLICY)

    assert on_spark.verdict == on_numpy.verdict
    statuses = {r.name: r.status for r in on_numpy.results}
    assert {r.name: r.status for r in on_spark.results} == statuses
    assert statuses["fairness"] == "fail" and statuses["drift"] != "skipped"  # judged, not skipped
    for name in ("ece", "reliability", "conformal", "drift"):
        spark_result, numpy_result = on_spark.result(name), on_numpy.result(name)
        assert spark_result is not None and numpy_result is not None
        assert close(spark_result.observed, numpy_result.observed), name
        assert close(spark_result.evidence, numpy_result.evidence), name
    # the conformal quantile is an exact order statistic: equal, not close
    assert on_spark.result("conformal").evidence["quantile"] == \
        on_numpy.result("conformal").evidence["quantile"]
    spark_groups = {g["group"]: g for g in on_spark.result("fairness").evidence["groups"]}
    numpy_groups = {g["group"]: g for g in on_numpy.result("fairness").evidence["groups"]}
    assert spark_groups == numpy_groups and "missing" in spark_groups
    assert close(on_spark.headline, {k: v for k, v in on_numpy.headline.items()
                                     if k in on_spark.headline})
    # a redelivered gate request finds the run it started: no second run, the same summary
    again = job(request_for(model_uri, folder), "m/1")
    assert peer.submits == 1 and len(peer.runs) == 1
    assert summary_to_dict(again) == summary_to_dict(summary)


def test_a_data_error_on_the_cluster_is_the_gate_runs_data_error(jobs, logged_model):
    peer, job = jobs
    model_uri, folder, _ = logged_model
    policy = POLICY.model_copy(update={"sensitive_column": "no_such_column"})
    with pytest.raises(EvaluationDataError, match="no sensitive column 'no_such_column'"):
        job(request_for(model_uri, folder, policy), "m/1/rerun/x")
    assert peer.submits == 1
