"""The `monitoring` section of the policy file: windows, thresholds with hysteresis, and when an
alert retrains the model or rolls back its canary.

    [defaults.monitoring]
    window_seconds = 300
    feature_psi = { enter = 0.2, exit = 0.1 }     # alert at 0.2, clear only below 0.1

    [models."fraud".monitoring.retraining]
    job_id = 123456789                              # Databricks job (when DATABRICKS_HOST is set)
    entrypoint = "python -m shared.monitoring.local_training --model {model}"   # local runner
    cooldown_seconds = 21600
    k = 2                                           # 2 of the last 3 windows, and the latest
    n = 3
"""

from __future__ import annotations

import shlex
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.events import AlertKind, Severity

RETRAINING_KINDS = (AlertKind.FEATURE_DRIFT, AlertKind.CALIBRATION_DRIFT,
                    AlertKind.PERFORMANCE_DRIFT)
ROLLBACK_KINDS = (AlertKind.CALIBRATION_DRIFT, AlertKind.PERFORMANCE_DRIFT,
                  AlertKind.PREDICTION_SHIFT, AlertKind.LATENCY, AlertKind.ERROR_RATE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    """Alert when the value reaches `enter`; clear only once it falls below `exit` (hysteresis:
    a value hovering at `enter` stays in one state instead of flapping)."""

    enter: float = Field(gt=0)
    exit: float = Field(gt=0)
    enabled: bool = True

    @model_validator(mode="after")
    def _exit_below_enter(self) -> Threshold:
        if self.exit > self.enter:
            raise ValueError(f"exit ({self.exit}) must not exceed enter ({self.enter})")
        return self


class RetrainingPolicy(_Strict):
    enabled: bool = True
    alert_kinds: tuple[AlertKind, ...] = RETRAINING_KINDS
    min_severity: Severity = "warning"
    cooldown_seconds: float = Field(6 * 3600.0, ge=0, description="per model, between starts")
    max_concurrent_runs: int = Field(1, ge=1, description="per model")
    k: int = Field(1, ge=1, description="violating windows needed among the last n")
    n: int = Field(1, ge=1)
    window_seconds: float | None = Field(
        None, gt=0, description="window of k-of-n for alerts that do not name their window; "
                                "default: the monitor's window_seconds")
    job_id: int | None = Field(None, ge=1, description="Databricks job run when "
                                                       "DATABRICKS_HOST is set")
    entrypoint: str | list[str] | None = Field(
        None, description="local runner command ({model} is replaced); "
                          "e.g. 'python -m shared.monitoring.local_training --model {model}'")
    run_timeout_seconds: float = Field(4 * 3600.0, gt=0,
                                       description="a run older than this no longer counts "
                                                   "as running")

    @model_validator(mode="after")
    def _k_within_n(self) -> RetrainingPolicy:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) must not exceed n ({self.n})")
        return self

    def command(self, model_name: str) -> list[str] | None:
        if self.entrypoint is None:
            return None
        parts = (shlex.split(self.entrypoint) if isinstance(self.entrypoint, str)
                 else list(self.entrypoint))
        return [part.replace("{model}", model_name) for part in parts]


class RollbackOnAlertPolicy(_Strict):
    enabled: bool = True
    alert_kinds: tuple[AlertKind, ...] = ROLLBACK_KINDS
    min_severity: Severity = "warning"


class MonitoringPolicy(_Strict):
    enabled: bool = True
    window_seconds: float = Field(300.0, ge=10, description="one monitoring window")
    max_catch_up_windows: int = Field(12, ge=1, description="windows judged per run at most")
    min_rows: int = Field(200, ge=1, description="rows a window needs for drift figures")
    min_labelled_rows: int = Field(100, ge=1, description="labelled rows for ECE / performance")
    min_requests: int = Field(50, ge=1, description="requests a window needs for latency and "
                                                    "error-rate judgements")
    n_bootstrap: int = Field(200, ge=50, le=5000, description="replicates of the ECE interval")
    n_bins: int = Field(10, ge=2, le=100, description="quantile bins of the reference (PSI)")
    ece_bins: int = Field(15, ge=2, le=100)
    epsilon: float = Field(1e-4, gt=0, lt=0.01, description="PSI's floor for empty bins")
    decision_threshold: float = Field(0.5, gt=0, lt=1)
    confidence_level: float = Field(
        0.99, ge=0.5, lt=1, description="of every interval; strict, since every window is a "
                                        "new test")
    categorical_columns: tuple[str, ...] = ()

    feature_psi: Threshold = Threshold(enter=0.2, exit=0.1)
    prediction_psi: Threshold = Threshold(enter=0.2, exit=0.1)
    ece: Threshold = Field(Threshold(enter=0.05, exit=0.03),
                           description="judged on the ECE interval's lower bound")
    performance_drop: Threshold = Field(
        Threshold(enter=0.05, exit=0.025),
        description="reference accuracy - the window's, judged on the conservative bound")
    estimated_performance_drop: Threshold = Field(
        Threshold(enter=0.05, exit=0.025),
        description="reference accuracy - the CBPE estimate's upper bound")
    latency_p99_ms: Threshold = Threshold(enter=1000.0, exit=800.0)
    token_latency_p99_ms: Threshold = Threshold(enter=200.0, exit=150.0)
    error_rate: Threshold = Threshold(enter=0.05, exit=0.02)

    experiment: str = Field("gatehouse-monitoring", min_length=1,
                            description="MLflow experiment of the monitoring runs")
    inference_table: str | None = Field(
        None, description="Databricks inference table (catalog.schema.table; {endpoint} is "
                          "replaced) read through the SQL statement API")
    warehouse_id: str | None = None
    inference_table_kind: Literal["ai_gateway", "legacy"] = "ai_gateway"
    retraining: RetrainingPolicy = Field(default_factory=RetrainingPolicy)
    rollback: RollbackOnAlertPolicy = Field(default_factory=RollbackOnAlertPolicy)

    @field_validator("categorical_columns", mode="before")
    @classmethod
    def _as_tuple(cls, value):
        return tuple(value) if isinstance(value, list) else value

    def thresholds(self) -> dict[str, Threshold]:
        return {name: getattr(self, name) for name in METRICS}

    def retraining_window(self) -> float:
        return self.retraining.window_seconds or self.window_seconds


# metric -> the alert kind it raises
METRICS: dict[str, AlertKind] = {
    "feature_psi": AlertKind.FEATURE_DRIFT,
    "prediction_psi": AlertKind.PREDICTION_SHIFT,
    "ece": AlertKind.CALIBRATION_DRIFT,
    "performance_drop": AlertKind.PERFORMANCE_DRIFT,
    "estimated_performance_drop": AlertKind.PERFORMANCE_DRIFT,
    "latency_p99_ms": AlertKind.LATENCY,
    "token_latency_p99_ms": AlertKind.LATENCY,
    "error_rate": AlertKind.ERROR_RATE,
}

