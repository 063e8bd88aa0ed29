"""What a gate run leaves in MLflow: one finished run of the gate experiment holding the policy
as params, the headline and per-gate metrics, report.json, report.md and the reliability diagram.
"""

from __future__ import annotations

import json
import math
from typing import Any

from shared.gates import report as rendering
from shared.gates.inputs import SuiteInputs
from shared.gates.mlflow_report import flatten, log_report_run, run_url
from shared.gates.policy import GatePolicy
from shared.gates.suite import SuiteReport


def params(policy: GatePolicy, inputs: SuiteInputs) -> dict[str, Any]:
    """The policy the suite ran with, flattened, and what it ran on."""
    flat = flatten("gates", policy.model_dump(mode="json", by_alias=True))
    found = {key: json.dumps(value) if isinstance(value, (list, dict)) else value
             for key, value in flat.items() if value is not None}
    found.update({"model_name": inputs.model_name, "version": inputs.version,
                  "champion_version": inputs.champion_version or "none",
                  "evaluation_rows": len(inputs.labels) if inputs.labels is not None else 0,
                  "feature_columns": json.dumps(inputs.feature_columns or [])})
    return found


def metrics(report: SuiteReport) -> dict[str, float]:
    """The headline, each gate's observed value and whether it passed (1 or 0)."""
    found = dict(report.headline)
    for result in report.results:
        if result.observed is not None and math.isfinite(result.observed):
            found[f"gates.{result.name}.observed"] = result.observed
        found[f"gates.{result.name}.passed"] = 1.0 if result.status == "pass" else 0.0
    return found


def diagrams(report: SuiteReport) -> dict[str, bytes]:
    """reliability.png, when the ECE gate drew a reliability table."""
    if report.candidate_table is None:
        return {}
    champion = (f"champion v{report.champion_version}" if report.champion_version
                else "no champion")
    return {"reliability.png": rendering.reliability_diagram_png(
        report.candidate_table, report.champion_table,
        f"{report.model_name} v{report.version} vs {champion}",
        candidate_label=f"v{report.version}",
        champion_label=f"v{report.champion_version} (champion)")}


def record_report(registry, policy: GatePolicy, inputs: SuiteInputs, report: SuiteReport,
                  context: dict[str, Any], event_id: str) -> tuple[str, str | None]:
    """Log the report run; returns (its run id, its address in the MLflow UI when it has one)."""
    experiment, run_id = log_report_run(
        registry.client, policy.experiment, f"{report.model_name} v{report.version}",
        tags={"gatehouse.model": report.model_name, "gatehouse.version": report.version,
              "gatehouse.verdict": report.verdict, "gatehouse.event_id": event_id},
        params=params(policy, inputs), metrics=metrics(report),
        texts={"report.json": rendering.report_json(report, policy, context),
               "report.md": rendering.report_markdown(report, context)},
        binaries=diagrams(report))
    return run_id, run_url(registry.tracking_uri, experiment, run_id)
