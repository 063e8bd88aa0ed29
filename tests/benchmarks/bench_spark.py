"""Benchmark: the gates on Spark against the numpy path (`python -m tests.benchmarks.bench_spark`).
Prints figures; asserts nothing but that both paths reach the same verdict.

A holdout of N rows (four numeric features, a binary label, a three-group sensitive column, a
calibration split column) and a drift reference of N rows are generated inside Spark with
spark.range and expressions (no N-row DataFrame built locally) and written as parquet. A small
scikit-learn logistic regression is logged with MLflow (a local sqlite store). Timed, each from the
parquet files to the verdict, for the ece, reliability, conformal (LAC), drift (PSI) and
fairness gates:

- numpy: pandas reads both files, the pyfunc model predicts, the suite judges the arrays (what
  the gate run does with `evaluation.path`);
- spark: a local Spark (local[2], through Spark Connect) reads, scores with mlflow's spark_udf and
  summarises (shared/gates/spark.py); the suite judges the summary (`evaluation.table`).

Rows per second = N / wall time. The machine's two cores are shared by Spark's two tasks and the
Python workers that score, so the figures are the single-machine floor of the Spark path; on a
cluster its aggregations and scoring spread over the executors while the numpy path cannot grow
beyond one process's memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from shared.gates.inputs import ModelOutputs, SuiteInputs
from shared.gates.policy import GatePolicy
from shared.gates.spark import SummaryRequest, run_request, session
from shared.gates.suite import run_suite

FEATURES = ["f0", "f1", "f2", "f3"]
POLICY = GatePolicy.model_validate({
    "sensitive_column": "group", "lineage": {"enabled": False}, "schema": {"enabled": False},
    "latency": {"enabled": False}, "comparison": {"enabled": False},
    "drift": {"ks_test": False}, "conformal": {"split": "column", "split_column": "calibrate"}})


def write_tables(spark, folder: Path, n: int) -> tuple[str, str]:
    from pyspark.sql import functions as F

    def features(seed: int, shift: float):
        return [(F.randn(seed + i) + F.lit(shift)).alias(f) for i, f in enumerate(FEATURES)]

    holdout = spark.range(n).select(*features(1, 0.02), F.rand(11).alias("u"),
                                    F.rand(12).alias("g"), F.rand(13).alias("c"))
    holdout = holdout.select(
        *FEATURES,
        ((F.col("f0") + 0.5 * F.col("f1") + F.log(F.col("u") / (1 - F.col("u")))) > 0)
        .cast("int").alias("label"),
        F.when(F.col("g") < 0.5, "a").when(F.col("g") < 0.8, "b").otherwise("c").alias("group"),
        (F.col("c") < 0.5).alias("calibrate"))
    paths = str(folder / "holdout.parquet"), str(folder / "reference.parquet")
    holdout.write.mode("overwrite").parquet(paths[0])
    spark.range(n).select(*features(21, 0.0)).write.mode("overwrite").parquet(paths[1])
    return paths


def log_model(folder: Path) -> str:
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    train = pd.DataFrame({f: rng.normal(0, 1, 5000) for f in FEATURES})
    labels = (train.f0 + 0.5 * train.f1 + rng.logistic(0, 1, 5000) > 0).astype(int)
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    experiment = mlflow.create_experiment("bench", artifact_location=str(folder / "art"))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.sklearn.log_model(LogisticRegression().fit(train, labels), name="model",
                                        pyfunc_predict_fn="predict_proba",
                                        input_example=train.head(3))
    return info.model_uri


def numpy_path(model_uri: str, holdout_path: str, reference_path: str):
    import mlflow
    import pandas as pd

    holdout, reference = pd.read_parquet(holdout_path), pd.read_parquet(reference_path)
    probabilities = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(holdout[FEATURES]))
    inputs = SuiteInputs("bench", "1", labels=holdout.label.to_numpy(), class_names=["0", "1"],
                         candidate=ModelOutputs(scores=np.ascontiguousarray(probabilities[:, 1])),
                         holdout=holdout.drop(columns=["label"]), feature_columns=FEATURES,
                         reference=reference, sensitive=holdout.group.to_numpy(),
                         calibration_rows=holdout.calibrate.to_numpy())
    return run_suite(inputs, POLICY)


def spark_path(spark, model_uri: str, holdout_path: str, reference_path: str):
    summary = run_request(spark, SummaryRequest(
        model_uri, holdout_path, POLICY.model_dump(mode="json", by_alias=True),
        reference=reference_path))
    return run_suite(SuiteInputs("bench", "1", class_names=["0", "1"], summary=summary), POLICY)


def timed(function, *arguments):
    started = time.perf_counter()
    result = function(*arguments)
    return result, time.perf_counter() - started


def main(sizes: list[int], numpy_limit: int) -> None:
    os.environ["SPARK_TESTING"] = "1"  # the local Connect server on a free port, not 15002
    spark = session("local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model_uri = log_model(folder)
        print(f"{'rows':>12} {'numpy s':>9} {'numpy rows/s':>13} {'spark s':>9} "
              f"{'spark rows/s':>13} {'spark/numpy':>12}  verdicts")
        for n in sizes:
            holdout_path, reference_path = write_tables(spark, folder / str(n), n)
            on_spark, spark_seconds = timed(spark_path, spark, model_uri, holdout_path,
                                            reference_path)
            numpy_figures, same = f"{'-':>9} {'-':>13}", "numpy path not run"
            ratio = "-"
            if n <= numpy_limit:
                on_numpy, numpy_seconds = timed(numpy_path, model_uri, holdout_path,
                                                reference_path)
                numpy_figures = f"{numpy_seconds:9.1f} {n / numpy_seconds:13,.0f}"
                ratio = f"{numpy_seconds / spark_seconds:.2f}"
                same = ("same" if [r.status for r in on_spark.results]
                        == [r.status for r in on_numpy.results] else "DIFFERENT")
            print(f"{n:>12,} {numpy_figures} {spark_seconds:9.1f} {n / spark_seconds:13,.0f} "
                  f"{ratio:>12}  {on_spark.verdict} ({same})", flush=True)
    spark.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=float, nargs="*", default=[1e6, 1e7])
    parser.add_argument("--numpy-limit", type=float, default=1e7,
                        help="largest holdout the numpy path is run on (memory)")
    arguments = parser.parse_args()
    main([int(rows) for rows in arguments.rows], int(arguments.numpy_limit))
