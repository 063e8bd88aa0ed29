"""What a gate run leaves in MLflow: one finished run of the gate experiment holding the policy
as params, the headline and per-gate metrics, report.json, report.md and the reliability diagram.

One run per gate request: the run carries the request's key, and a request redone after a crash
reuses its finished run (`recorded_report` reads the verdict back from its report.json) or
replaces an unfinished one (shared/gates/mlflow_report.py says why).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.gates import report as rendering
from shared.gates.catalog import coverage_report
from shared.gates.inputs import SuiteInputs
from shared.gates.mlflow_report import (
    discard_run,
    find_report_runs,
    flatten,
    load_json,
    log_report_run,
    run_key_tags,
    run_url,
)
from shared.gates.policy import GatePolicy
from shared.gates.results import GateResult
from shared.gates.suite import SuiteReport


@dataclass(frozen=True)
class RecordedReport:
    """A finished report run found by its request key, read back from its report.json."""

    report: SuiteReport
    decided_at: str
    run_id: str
    url: str | None


def params(policy: GatePolicy, inputs: SuiteInputs) -> dict[str, Any]:
    """The policy the suite ran with, flattened, and what it ran on."""
    flat = flatten("gates", policy.model_dump(mode="json", by_alias=True))
    found = {key: json.dumps(value) if isinstance(value, (list, dict)) else value
             for key, value in flat.items() if value is not None}
    found.update({"model_name": inputs.model_name, "version": inputs.version,
                  "champion_version": inputs.champion_version or "none",
                  "evaluation_rows": (inputs.summary.rows if inputs.summary is not None
                                      else len(inputs.labels) if inputs.labels is not None
                                      else 0),
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


def diagrams(report: SuiteReport, policy: GatePolicy,
             inputs: SuiteInputs | None = None) -> dict[str, bytes]:
    """reliability.png, when the ECE gate drew a reliability table: the verdict and the ECE
    with its interval in the title; for a regression model, regression.png (its intervals'
    coverage and width against the prediction)."""
    if report.candidate_table is None:
        return regression_diagram(report, policy, inputs) if inputs is not None else {}
    champion = (f"champion v{report.champion_version}" if report.champion_version
                else "no champion")
    figures = report.headline
    interval = ((figures["ece_lower"], figures["ece_upper"])
                if "ece_lower" in figures and "ece_upper" in figures else None)
    title = rendering.diagram_title(f"{report.model_name} v{report.version} vs {champion}",
                                    report.verdict, figures.get("ece"), interval,
                                    policy.ece.threshold)
    return {"reliability.png": rendering.reliability_diagram_png(
        report.candidate_table, report.champion_table, title,
        candidate_label=f"v{report.version}",
        champion_label=f"v{report.champion_version} (champion)",
        min_bin_count=policy.reliability.min_bin_count,
        confidence=policy.confidence_level)}


def regression_diagram(report: SuiteReport, policy: GatePolicy,
                       inputs: SuiteInputs) -> dict[str, bytes]:
    """regression.png when the conformal gate judged a regression model's intervals (the
    coverage is worked out again: the split is seeded, so it is the gate's)."""
    gate = report.result("conformal")
    scores = inputs.candidate.scores
    if policy.task != "regression" or gate is None or gate.status == "skipped" or \
            inputs.labels is None or scores is None:
        return {}
    coverage = coverage_report(policy, inputs, inputs.labels, scores)
    if coverage.test_rows is None:
        return {}
    settings = policy.conformal
    title = (f"{report.model_name} v{report.version}: {report.verdict.upper()}\n"
             f"coverage {coverage.coverage:.4f} [{coverage.interval.lower:.4f}, "
             f"{coverage.interval.upper:.4f}] (target {settings.level:.0%} "
             f"± {settings.tolerance:.0%}), mean width {coverage.mean_size:.4g}")
    return {"regression.png": rendering.regression_diagram_png(
        coverage.test_rows, title, settings.level, settings.tolerance,
        min_bin_count=policy.reliability.min_bin_count, confidence=policy.confidence_level)}


def record_report(registry, policy: GatePolicy, inputs: SuiteInputs, report: SuiteReport,
                  context: dict[str, Any], event_id: str, run_key: str,
                  before_finish: Callable[[str], None] | None = None) -> tuple[str, str | None]:
    """Log the report run; returns (its run id, its address in the MLflow UI when it has one).
    `before_finish(run_id)` completes the report (the monitoring reference) before it counts as
    recorded."""
    experiment, run_id = log_report_run(
        registry.client, policy.experiment, f"{report.model_name} v{report.version}",
        tags={"gatehouse.model": report.model_name, "gatehouse.version": report.version,
              "gatehouse.verdict": report.verdict, "gatehouse.event_id": event_id,
              **run_key_tags(run_key)},
        params=params(policy, inputs), metrics=metrics(report),
        texts={"report.json": rendering.report_json(report, policy, context),
               "report.md": rendering.report_markdown(report, context)},
        binaries=diagrams(report, policy, inputs), before_finish=before_finish)
    return run_id, run_url(registry.tracking_uri, experiment, run_id)


def recorded_report(registry, policy: GatePolicy, run_key: str) -> RecordedReport | None:
    """The finished report run of `run_key`, read back; None when there is none. Unfinished runs
    with the key (left by a crash) are discarded, so the caller logs the one report anew."""
    runs = find_report_runs(registry.client, policy.experiment, run_key)
    finished = next((run for run in runs if run.finished), None)
    if finished is None:
        for run in runs:
            discard_run(registry.client, run.run_id)
        return None
    document = load_json(registry.client, finished.run_id, "report.json")
    return RecordedReport(report_from_document(document), str(document.get("generated_at", "")),
                          finished.run_id,
                          run_url(registry.tracking_uri, finished.experiment_id, finished.run_id))


def report_from_document(document: dict[str, Any]) -> SuiteReport:
    """The parts of a SuiteReport a decision needs, from the report.json that recorded it."""
    results = [GateResult(g["name"], g["status"], bool(g["blocking"]), g.get("observed"),
                          g.get("threshold"), g.get("detail") or "", g.get("evidence") or {})
               for g in document.get("gates", [])]
    champion = document.get("champion_version")
    return SuiteReport(str(document["model"]), str(document["version"]),
                       str(champion) if champion is not None else None, document["verdict"],
                       results, {k: float(v) for k, v in document.get("headline", {}).items()})
