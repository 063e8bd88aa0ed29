"""The `gates` section of the policy file: which gates run, whether they block, their thresholds.

Every default below is the issue's stated threshold. A model with no entry in the policy file gets
exactly these; `[models."<name>".gates.<gate>]` overrides one key at a time (see
policy.example.toml at the repository root).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Task = Literal["binary_classification", "multiclass_classification", "regression"]

CLASSIFICATION_METRICS = ("auc", "accuracy", "f1", "log_loss", "brier", "precision", "recall")
REGRESSION_METRICS = ("rmse", "mae", "r2")
MetricName = Literal["auc", "accuracy", "f1", "log_loss", "brier", "precision", "recall",
                     "rmse", "mae", "r2"]
DEFAULT_METRICS = {
    "binary_classification": ("auc", "accuracy", "log_loss", "brier"),
    "multiclass_classification": ("accuracy", "log_loss", "brier"),
    "regression": ("rmse", "mae", "r2"),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GateSection(_Strict):
    enabled: bool = True
    blocking: bool = True


class EvaluationData(_Strict):
    """Where the holdout (and the drift reference) live. `{model}` in a path is replaced by the
    registered model's name, so one default can serve every model."""

    path: str | None = Field(None, description="local path or s3://bucket/key (parquet or CSV)")
    format: Literal["auto", "parquet", "csv"] = "auto"
    reference_path: str | None = Field(None, description="training/reference data for drift")
    reference_format: Literal["auto", "parquet", "csv"] = "auto"
    feature_columns: list[str] | None = Field(
        None, description="model inputs; default: the signature's input names, else every "
                          "column except the label and the sensitive column")
    table: str | None = Field(None, description="a holdout Spark reads instead of `path`: a "
                              "catalog table (catalog.schema.table) or a parquet path (a Delta "
                              "path with table_format 'delta'); scored and summarised on Spark "
                              "(shared/gates/spark.py)")
    table_format: Literal["auto", "parquet", "delta"] = "auto"
    reference_table: str | None = Field(None, description="the drift reference, read by Spark")
    reference_table_format: Literal["auto", "parquet", "delta"] = "auto"


class EceGate(GateSection):
    threshold: float = Field(0.02, gt=0, le=1, description="ECE must be below this")
    n_bins: int = Field(15, ge=2, le=1000)
    binning: Literal["equal_width", "equal_mass"] = "equal_width"
    kind: Literal["auto", "binary", "top_label", "classwise"] = Field(
        "auto", description="auto: positive-class for binary, top-label for multiclass")


class ReliabilityGate(GateSection):
    max_gap: float = Field(0.05, gt=0, le=1, description="no bin may deviate by more")
    min_bin_count: int = Field(10, ge=1, description="smaller bins are reported as too small")


class ConformalGate(GateSection):
    level: float = Field(0.90, gt=0, lt=1, description="stated coverage level")
    tolerance: float = Field(0.02, gt=0, lt=1, description="allowed |coverage - level|")
    calibration_fraction: float = Field(0.5, gt=0, lt=1)
    split: Literal["random", "ordered", "column"] = Field(
        "random", description="ordered: calibrate on the first rows, test on the later ones "
                              "(a time-ordered holdout then also tests exchangeability); "
                              "column: the rows where split_column is true calibrate (the same "
                              "rows on every engine, numpy or Spark)")
    split_column: str | None = Field(None, min_length=1, description="boolean holdout column "
                                     "marking the calibration rows (split = 'column')")
    classifier_score: Literal["lac", "aps"] = "lac"
    mondrian: bool = Field(False, description="per-class (Mondrian) quantiles for classifiers")
    regression_score: Literal["absolute", "normalized", "cqr"] = "absolute"
    difficulty_output: str | None = Field(None, description="model output column with the "
                                          "difficulty estimate (normalized)")
    lower_output: str | None = Field(None, description="model output column of the lower "
                                     "quantile (cqr)")
    upper_output: str | None = Field(None, description="model output column of the upper "
                                     "quantile (cqr)")

    @model_validator(mode="after")
    def _outputs_for_score(self) -> ConformalGate:
        if self.regression_score == "cqr" and not (self.lower_output and self.upper_output):
            raise ValueError("regression_score 'cqr' needs lower_output and upper_output")
        if self.regression_score == "normalized" and not self.difficulty_output:
            raise ValueError("regression_score 'normalized' needs difficulty_output")
        if (self.split == "column") != (self.split_column is not None):
            raise ValueError("split = 'column' and split_column go together")
        return self


class MetricSpec(_Strict):
    name: MetricName
    tolerance: float = Field(0.0, ge=0, description="allowed shortfall against the champion")
    relative: bool = Field(False, description="tolerance as a fraction of the champion's value")
    threshold: float = Field(0.5, gt=0, lt=1, description="decision threshold (accuracy, f1, "
                             "precision, recall)")


class ComparisonGate(GateSection):
    metrics: list[MetricSpec] | None = Field(
        None, description="default: auc, accuracy, log_loss, brier (binary); accuracy, "
                          "log_loss, brier (multiclass); rmse, mae, r2 (regression)")

    @field_validator("metrics", mode="before")
    @classmethod
    def _names_as_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class DriftGate(GateSection):
    psi_warn: float = Field(0.1, gt=0)
    psi_fail: float = Field(0.2, gt=0)
    n_bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference")
    epsilon: float = Field(1e-4, gt=0, lt=0.01, description="floor for empty-bin proportions")
    categorical_columns: list[str] = Field(default_factory=list)
    ks_warn: float | None = Field(None, gt=0, le=1, description="warn above this KS statistic")
    ks_test: bool = Field(True, description="the KS test of numeric columns (sorts both "
                                            "samples); false: PSI only, without sorting")
    js_warn: float | None = Field(None, gt=0, le=1, description="warn above this JS distance")

    @model_validator(mode="after")
    def _ordered(self) -> DriftGate:
        if self.psi_warn > self.psi_fail:
            raise ValueError(f"psi_warn ({self.psi_warn}) must not exceed psi_fail "
                             f"({self.psi_fail})")
        if self.ks_warn is not None and not self.ks_test:
            raise ValueError("ks_warn needs the KS test (ks_test = true)")
        return self


class LatencyGate(GateSection):
    warmup_requests: int = Field(20, ge=0)
    requests: int = Field(200, ge=10, le=100_000)
    max_p99_ms: float = Field(100.0, gt=0)
    max_p99_ratio: float = Field(1.5, ge=1, description="candidate p99 / champion p99")
    ratio_floor_ms: float = Field(5.0, ge=0, description="below this p99 the ratio is not "
                                  "judged: timer noise dominates")


class SchemaGate(GateSection):
    pass


class FairnessGate(GateSection):
    max_demographic_parity_difference: float = Field(0.1, gt=0, le=1)
    max_equalized_odds_difference: float = Field(0.1, gt=0, le=1)
    decision_threshold: float = Field(0.5, gt=0, lt=1)


class LineageGate(GateSection):
    required_tags: list[str] = Field(
        default_factory=lambda: ["dataset_version", "feature_store_table", "team"])
    require_run_id: bool = True


class GatePolicy(_Strict):
    task: Task = "binary_classification"
    label_column: str = Field("label", min_length=1)
    sensitive_column: str | None = Field(None, min_length=1)
    evaluation: EvaluationData = Field(default_factory=EvaluationData)
    first_version_becomes_champion: bool = Field(
        False, description="a first version that passes (no champion yet) also gets @champion")
    experiment: str = Field("gatehouse-gates", min_length=1,
                            description="MLflow experiment of the gate report runs")
    confidence_level: float = Field(0.95, ge=0.5, lt=1, description="of every interval")
    n_bootstrap: int = Field(200, ge=50, le=10_000)
    seed: int = Field(0, ge=0)

    lineage: LineageGate = Field(default_factory=LineageGate)
    schema_: SchemaGate = Field(default_factory=SchemaGate, alias="schema")
    ece: EceGate = Field(default_factory=EceGate)
    reliability: ReliabilityGate = Field(default_factory=ReliabilityGate)
    conformal: ConformalGate = Field(default_factory=ConformalGate)
    comparison: ComparisonGate = Field(default_factory=ComparisonGate)
    drift: DriftGate = Field(default_factory=DriftGate)
    fairness: FairnessGate = Field(default_factory=FairnessGate)
    latency: LatencyGate = Field(default_factory=LatencyGate)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> GatePolicy:
        allowed = REGRESSION_METRICS if self.task == "regression" else CLASSIFICATION_METRICS
        for spec in self.comparison.metrics or ():
            if spec.name not in allowed:
                raise ValueError(f"metric {spec.name!r} does not apply to task {self.task!r} "
                                 f"(allowed: {', '.join(allowed)})")
            if self.task == "multiclass_classification" and spec.name in ("precision", "recall"):
                raise ValueError(f"metric {spec.name!r} at a threshold needs a binary task")
        return self

    def gate(self, name: str) -> GateSection:
        return self.schema_ if name == "schema" else getattr(self, name)

    def metric_specs(self) -> list[MetricSpec]:
        if self.comparison.metrics is not None:
            return list(self.comparison.metrics)
        return [MetricSpec(name=name) for name in DEFAULT_METRICS[self.task]]

    def resolved_path(self, path: str | None, model_name: str) -> str | None:
        return path.replace("{model}", model_name) if path else None
