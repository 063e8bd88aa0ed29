"""Gates on Spark: a holdout given as a table is scored where it lives and summarised with
DataFrame aggregations, so only the small summaries of shared/gates/summaries.py come back.

Everything here is Spark Connect-safe (what Databricks serverless and shared clusters allow): a
`spark_udf` to score, `groupBy`/`agg`/`where`/`collect` to summarise; no RDDs, no sparkContext.
The pure gate math then judges the summary exactly as it judges the numpy path's, so both give
the same verdict and figures on the same rows (exact counts and order statistics equal; sums up
to the order of floating-point addition).

What the Spark path summarises: a binary classifier's calibration (equal-width bins, the
`binary` or `top_label` kind, the moment bootstrap), split-conformal LAC coverage (the split
from `conformal.split_column`; `random` draws with Spark's rand(seed), another draw than numpy's),
fairness confusion counts and numeric PSI on the reference's quantile edges (the KS test needs
sorted samples and is left out). The comparison gate needs both models' rows and is reported as
skipped; so is the latency gate.
"""

from __future__ import annotations

import operator
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import Any

import numpy as np

from shared.gates.calibration import ReliabilityTable, resolve_kind
from shared.gates.drift import decile_levels, reference_edges
from shared.gates.evaluation import EvaluationDataError
from shared.gates.policy import GatePolicy
from shared.gates.summaries import (
    BucketStats,
    CoverageCounts,
    GroupConfusion,
    HoldoutSummary,
    PsiCounts,
    bucket_scale,
    conformal_rank,
    linear_quantiles,
    order_statistic,
)

SCORE, LABEL, CALIBRATE = "__gatehouse_p", "__gatehouse_y", "__gatehouse_calibrate"


def session(remote: str):
    """A Spark Connect session: `local[N]` starts a local server (its Python workers run this
    interpreter, which has the app's packages), `sc://host:port` reaches a running one."""
    from pyspark.sql import SparkSession

    if remote.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return SparkSession.builder.remote(remote).getOrCreate()


def read_table(spark, source: str, format: str = "auto"):
    """A catalog table name (`catalog.schema.table`), a parquet path, or (format "delta") a
    Delta path; `auto` reads a name with a "/" as a parquet path."""
    if format == "delta":
        return spark.read.format("delta").load(source)
    if format == "parquet" or "/" in source:
        return spark.read.parquet(source)
    return spark.read.table(source)


@dataclass(frozen=True)
class Holdout:
    """The scored holdout: SCORE = P(positive class), LABEL = 1[label is the positive class],
    CALIBRATE = whether the row calibrates the conformal quantile."""

    frame: Any
    classes: list
    sensitive: str | None


def scored_holdout(spark, frame, model_uri: str, features: list[str], classes: list,
                   policy: GatePolicy) -> Holdout:
    import mlflow.pyfunc
    from pyspark.sql import functions as F

    if len(classes) != 2:
        raise EvaluationDataError(f"the Spark path judges binary classifiers; the model names "
                                  f"{len(classes)} classes")
    label = F.col(policy.label_column)
    unknown = frame.where(label.isNull() | ~label.isin(*classes)).limit(5).collect()
    if unknown:
        raise EvaluationDataError(f"holdout labels {[row[policy.label_column] for row in unknown]}"
                                  f" are not among the model's classes {classes}")
    predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="array<double>",
                                      env_manager="local")
    split = policy.conformal
    if split.split == "column":
        calibrate = F.col(str(split.split_column)).cast("boolean")
    else:
        calibrate = F.rand(policy.seed) < F.lit(split.calibration_fraction)
    scored = frame.select(
        *frame.columns,
        F.element_at(predict(*[F.col(c) for c in features]), 2).alias(SCORE),
        (label == F.lit(classes[1])).cast("int").alias(LABEL),
        calibrate.alias(CALIBRATE))
    return Holdout(scored, classes, policy.sensitive_column)


# ---- summaries --------------------------------------------------------------------------------

def calibration_track(kind: str):
    """(confidence, outcome) columns of the binary classifier's ECE of this kind."""
    from pyspark.sql import functions as F

    p, y = F.col(SCORE), F.col(LABEL)
    if kind == "binary":
        return p, y
    if kind == "top_label":
        return (F.greatest(p, F.lit(1.0) - p),
                ((p >= F.lit(0.5)) == (y == F.lit(1))).cast("int"))
    raise EvaluationDataError(f"the Spark path computes the binary or top-label ECE, not {kind}")


def reliability(frame, confidence, outcome, edges: np.ndarray) -> ReliabilityTable:
    from pyspark.sql import functions as F

    # bin = the number of inner edges below the confidence (calibration.bin_index)
    index = sum((confidence > F.lit(float(e))).cast("int") for e in edges[1:-1])
    rows = (frame.select(index.alias("bin"), confidence.alias("c"), outcome.alias("o"))
            .groupBy("bin")
            .agg(F.count("*").alias("n"), F.sum("c").alias("c"), F.sum("o").alias("o"),
                 F.sum(F.col("c") * F.col("c")).alias("cc"),
                 F.sum(F.col("c") * F.col("o")).alias("co"))
            .collect())
    n_bins = len(edges) - 1
    table = {name: np.zeros(n_bins) for name in ("n", "c", "o", "cc", "co")}
    for row in rows:
        for name in table:
            table[name][row["bin"]] = row[name]
    return ReliabilityTable(edges, table["n"].astype(np.int64), table["c"], table["o"],
                            table["cc"], table["co"])


@dataclass(frozen=True)
class SparkValues:
    """The OrderSource of one numeric column of a DataFrame (nulls and NaN left out)."""

    frame: Any
    column: str

    def _values(self, lo: float, hi: float):
        from pyspark.sql import functions as F

        v = F.col(self.column)
        return self.frame.select(v.alias("v")).where(
            v.isNotNull() & ~F.isnan(v) & (v >= F.lit(lo)) & (v <= F.lit(hi)))

    def extent(self) -> tuple[int, float, float]:
        from pyspark.sql import functions as F

        row = self._values(-np.inf, np.inf).agg(F.count("*"), F.min("v"), F.max("v")).first()
        return int(row[0]), row[1], row[2]


    def bucket_stats(self, lo: float, hi: float, n_buckets: int) -> BucketStats:
        from pyspark.sql import functions as F

        scale = bucket_scale(lo, hi, n_buckets)  # summaries.bucket_of, as Spark SQL
        bucket = F.least(F.greatest(F.floor((F.col("v") - F.lit(lo)) * F.lit(scale)),
                                    F.lit(0)), F.lit(n_buckets - 1))
        rows = (self._values(lo, hi).groupBy(bucket.alias("b"))
                .agg(F.count("*").alias("n"), F.min("v").alias("lo"), F.max("v").alias("hi"))
                .collect())
        stats = BucketStats(np.zeros(n_buckets, dtype=np.int64), np.full(n_buckets, np.nan),
                            np.full(n_buckets, np.nan))
        for row in rows:
            stats.counts[row["b"]], stats.minimum[row["b"]] = row["n"], row["lo"]
            stats.maximum[row["b"]] = row["hi"]
        return stats

    def values_between(self, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
        from pyspark.sql import functions as F

        v = F.col("v")
        inside = reduce(operator.or_, [(v >= F.lit(lo)) & (v <= F.lit(hi)) for lo, hi in ranges])
        rows = self._values(-np.inf, np.inf).where(inside).collect()
        return np.array([row[0] for row in rows], dtype=float)


def coverage(holdout: Holdout, level: float) -> CoverageCounts:
    """LAC split-conformal coverage of a binary classifier: s = 1 - p_y."""
    from pyspark.sql import functions as F

    p, y = F.col(SCORE), F.col(LABEL)
    frame = holdout.frame.select(
        p.alias("p"), y.alias("y"), F.col(CALIBRATE).alias("cal"),
        F.when(y == 1, F.lit(1.0) - p).otherwise(p).alias("s"))
    source = SparkValues(frame.where(F.col("cal")), "s")
    n_calibration, lo, hi = source.extent()
    rank = conformal_rank(n_calibration, 1 - level) if n_calibration else None
    q = float("inf") if rank is None else order_statistic(source, rank, lo, hi, n_calibration)
    covered = (F.col("s") <= F.lit(q)).cast("int")
    sizes = (F.col("p") <= F.lit(q)).cast("int") + ((F.lit(1.0) - F.col("p")) <= F.lit(q)).cast(
        "int")
    rows = (frame.where(~F.col("cal")).groupBy("y")
            .agg(F.count("*").alias("n"), F.sum(covered).alias("hits"),
                 F.sum(sizes).alias("sizes")).collect())
    class_counts, class_covered = np.zeros(2, dtype=np.int64), np.zeros(2)
    for row in rows:
        class_counts[row["y"]], class_covered[row["y"]] = row["n"], row["hits"]
    n_test = int(class_counts.sum())
    if n_test == 0 or n_calibration == 0:
        raise EvaluationDataError("the holdout is too small to split into calibration and test "
                                  "rows")
    return CoverageCounts(q, n_calibration, n_test, int(class_covered.sum()),
                          sum(int(row["sizes"]) for row in rows), class_counts, class_covered)


def confusion(holdout: Holdout, threshold: float) -> GroupConfusion:
    from pyspark.sql import functions as F

    group = F.col(str(holdout.sensitive))
    predicted = (F.col(SCORE) >= F.lit(threshold)).cast("int")
    rows = (holdout.frame.groupBy(group.alias("g"), predicted.alias("p"), F.col(LABEL).alias("y"))
            .count().collect())
    groups = sorted({row["g"] for row in rows}, key=lambda g: (g is None, str(g)))
    counts = np.zeros((len(groups), 2, 2), dtype=np.int64)
    for row in rows:
        counts[groups.index(row["g"]), row["p"], row["y"]] = row["count"]
    return GroupConfusion(tuple(groups), counts)


def psi_counts(reference, current, columns: list[str], n_bins: int) -> list[PsiCounts]:
    """Each numeric column's counts on the reference's quantile edges (bit for bit the edges
    np.quantile gives), one aggregation pass over each frame for all columns."""
    reference = reference.cache()
    edges = {}
    for column in columns:
        source = SparkValues(reference, column)
        n, lo, hi = source.extent()
        if n == 0:
            raise EvaluationDataError(f"column {column!r} has no non-missing values to compare")
        edges[column] = reference_edges(linear_quantiles(source, decile_levels(n_bins), n, lo,
                                                         hi))
    found_reference = _counts_on_edges(reference, edges)
    reference.unpersist()
    found_current = _counts_on_edges(current, edges)
    return [PsiCounts(column, edges[column], found_reference[column][0],
                      found_current[column][0], found_reference[column][1],
                      found_current[column][1]) for column in columns]


def _counts_on_edges(frame, edges: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, int]]:
    from pyspark.sql import functions as F

    aggregates = []
    for column, inner in edges.items():
        v = F.col(column)
        missing = v.isNull() | F.isnan(v)
        index = sum((v > F.lit(float(e))).cast("int") for e in inner) if len(inner) else F.lit(0)
        aggregates.append(F.sum(missing.cast("int")))
        aggregates += [F.sum((~missing & (index == F.lit(i))).cast("int"))
                       for i in range(len(inner) + 1)]
    row = frame.agg(*aggregates).first()
    found, at = {}, 0
    for column, inner in edges.items():
        values = [int(x or 0) for x in row[at:at + len(inner) + 2]]
        found[column] = (np.array(values[1:], dtype=np.int64), values[0])
        at += len(inner) + 2
    return found


def summarise(holdout: Holdout, policy: GatePolicy, reference=None,
              columns: list[str] | None = None) -> HoldoutSummary:
    """The holdout's summary for the policy's enabled gates (the scored frame cached meanwhile,
    so the model scores each row once)."""
    frame = holdout.frame.cache()
    holdout = replace(holdout, frame=frame)
    try:
        rows = int(frame.count())
        if rows == 0:
            raise EvaluationDataError("the holdout table has no rows")
        kind = resolve_kind(policy.ece.kind, 2)
        tables: dict[str, ReliabilityTable] = {}
        if policy.ece.enabled or policy.reliability.enabled:
            if policy.ece.binning != "equal_width":
                raise EvaluationDataError("the Spark path bins the ECE by equal width")
            edges = np.linspace(0.0, 1.0, policy.ece.n_bins + 1)
            confidence, outcome = calibration_track(kind)
            tables[_track_name(kind)] = reliability(frame, confidence, outcome, edges)
        conformal = policy.conformal
        coverage_counts = None
        if conformal.enabled:
            if conformal.classifier_score != "lac" or conformal.mondrian:
                raise EvaluationDataError("the Spark path computes LAC marginal coverage")
            coverage_counts = coverage(holdout, conformal.level)
        fairness_counts = None
        if policy.fairness.enabled and holdout.sensitive:
            fairness_counts = confusion(holdout, policy.fairness.decision_threshold)
        drift = None
        if policy.drift.enabled and reference is not None:
            drift = psi_counts(reference, frame, columns or [], policy.drift.n_bins)
        return HoldoutSummary(rows, kind, tables, None, coverage_counts, fairness_counts, drift,
                              class_names=tuple(str(c) for c in holdout.classes))
    finally:
        frame.unpersist()


def _track_name(kind: str) -> str:
    return "positive" if kind == "binary" else "top_label"


NUMERIC = ("double", "float", "int", "bigint", "smallint", "tinyint", "decimal")


def drift_columns(holdout, reference, policy: GatePolicy) -> list[str]:
    """The columns the drift gate compares (the numpy path's: every holdout column the reference
    has, but the label); numeric ones only, as the Spark path bins those."""
    types = dict(reference.dtypes)
    common = [name for name, _ in holdout.dtypes
              if name in types and name != policy.label_column]
    categorical = [name for name in common if name in policy.drift.categorical_columns
                   or types[name].split("(")[0] not in NUMERIC]
    if categorical:
        raise EvaluationDataError(f"the Spark path bins numeric columns; categorical "
                                  f"{categorical} would need their value counts")
    return common


# ---- one request, as the gate run (or the Databricks job) runs it -----------------------------

@dataclass(frozen=True)
class SummaryRequest:
    """What to summarise: JSON-able, so a Databricks job receives it as its parameter."""

    model_uri: str
    holdout: str
    policy: dict[str, Any]  # GatePolicy.model_dump(by_alias=True)
    holdout_format: str = "auto"
    reference: str | None = None
    reference_format: str = "auto"

    def gate_policy(self) -> GatePolicy:
        return GatePolicy.model_validate(self.policy)


def run_request(spark, request: SummaryRequest) -> HoldoutSummary:
    """Read the tables, score the holdout with the model, summarise."""
    import mlflow.pyfunc

    policy = request.gate_policy()
    frame = read_table(spark, request.holdout, request.holdout_format)
    for role, column in (("label", policy.label_column), ("sensitive", policy.sensitive_column),
                         ("conformal split", policy.conformal.split_column)):
        if column and column not in frame.columns:
            raise EvaluationDataError(f"{request.holdout}: no {role} column {column!r} "
                                      f"(columns: {frame.columns[:20]})")
    model = mlflow.pyfunc.load_model(request.model_uri)
    features = model_features(frame, model, policy)
    holdout = scored_holdout(spark, frame, request.model_uri, features,
                             model_classes(frame, model, policy), policy)
    reference, columns = None, None
    if request.reference is not None and policy.drift.enabled:
        reference = read_table(spark, request.reference, request.reference_format)
        columns = drift_columns(frame, reference, policy)
    return summarise(holdout, policy, reference, columns)


def model_features(frame, model, policy: GatePolicy) -> list[str]:
    from shared.gates import evaluation

    schema = model.metadata.get_input_schema()
    names = schema.input_names() if schema is not None else None
    features = evaluation.feature_columns(frame, names, policy.evaluation.feature_columns,
                                          policy.label_column, policy.sensitive_column)
    return [c for c in features if c != policy.conformal.split_column]


def model_classes(frame, model, policy: GatePolicy) -> list:
    """The model's classes (its `classes_`), else the holdout's labels in sorted order."""
    try:
        classes = getattr(model.get_raw_model(), "classes_", None)
    except Exception:  # flavours without a raw model
        classes = None
    if classes is not None:
        return list(np.asarray(classes).tolist())
    labels = frame.select(policy.label_column).distinct().limit(3).collect()
    return sorted(row[0] for row in labels)
