"""Azure Monitor's common alert schema (`schemaId: azureMonitorCommonAlertSchema`).

One POST is one alert instance. `essentials` gives the rule, severity (Sev0-Sev4), the
condition (Fired / Resolved) and its times; `alertContext` the measured values (metric alerts:
`condition.allOf[*].metricName/metricValue/threshold`; log search alerts: the same under
LogQueryCriteria, or `Threshold`/`ResultCount` in the older shape); `customProperties` and the
condition's dimensions become labels, so a rule can name its model with a custom property
`model=fraud`. An Azure ML online endpoint target names the endpoint.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.alerts import common
from shared.foundation.http import json_object, validate

SOURCE = "azure-monitor"
SCHEMA_ID = "azureMonitorCommonAlertSchema"
AZURE_SEVERITY = {"sev0": "critical", "sev1": "error", "sev2": "warning", "sev3": "info",
                  "sev4": "info"}
_ONLINE_ENDPOINT = re.compile(r"/onlineendpoints/([^/]+)", re.IGNORECASE)


class Essentials(common.Lenient):
    alertId: str = Field(min_length=1)
    alertRule: str = Field(min_length=1)
    severity: str
    signalType: str | None = None
    monitorCondition: Literal["Fired", "Resolved"]
    monitoringService: str | None = None
    alertTargetIDs: list[str] = Field(default_factory=list)
    configurationItems: list[str] = Field(default_factory=list)
    originAlertId: str | None = None
    firedDateTime: datetime
    resolvedDateTime: datetime | None = None
    description: str | None = None


class AlertData(common.Lenient):
    essentials: Essentials
    alertContext: dict | None = None
    customProperties: dict[str, str | None] | None = None


class CommonAlert(common.Lenient):
    schemaId: Literal["azureMonitorCommonAlertSchema"]
    data: AlertData


def _criteria(context: dict) -> list[dict]:
    condition = context.get("condition")
    if isinstance(condition, dict) and isinstance(condition.get("allOf"), list):
        return [c for c in condition["allOf"] if isinstance(c, dict)]
    return []


def _dimensions(items: object) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    return {str(d["name"]): str(d.get("value")) for d in items
            if isinstance(d, dict) and d.get("name")}


def _context_facts(context: dict) -> tuple[dict[str, float], dict[str, str], list[str]]:
    figures: dict[str, float] = {}
    labels: dict[str, str] = {}
    names: list[str] = []
    for index, criterion in enumerate(_criteria(context)):
        metric = criterion.get("metricName") or criterion.get("metricMeasureColumn")
        value = common.number(criterion.get("metricValue"))
        threshold = common.number(criterion.get("threshold"))
        key = str(metric) if metric else f"criterion_{index}"
        if metric:
            names.append(str(metric))
            labels.setdefault("metric", str(metric))
        if value is not None:
            figures[key] = value
            figures.setdefault("value", value)
        if threshold is not None:
            figures[f"{key}_threshold" if len(_criteria(context)) > 1 else "threshold"] = threshold
        labels.update(_dimensions(criterion.get("dimensions")))
    for key in ("Threshold", "ResultCount"):  # log search alerts, pre-2021 shape
        value = common.number(context.get(key))
        if value is not None:
            figures[key.lower() if key == "Threshold" else "result_count"] = value
    labels.update(_dimensions(context.get("Dimensions")))
    properties = context.get("properties")
    if isinstance(properties, dict):
        labels.update({str(k): str(v) for k, v in properties.items() if v is not None})
    return figures, labels, names


def parse(body: bytes) -> common.AlertBatch:
    document = json_object(body)
    payload = validate(CommonAlert, document, what="Azure Monitor common alert schema payload")
    essentials = payload.data.essentials
    context = payload.data.alertContext or {}
    figures, context_labels, metric_names = _context_facts(context)
    labels = common.clean_labels(context_labels, payload.data.customProperties,
                                 common.labels_from_text(essentials.description),
                                 {"alert_rule": essentials.alertRule,
                                  "signal_type": essentials.signalType,
                                  "monitoring_service": essentials.monitoringService})
    endpoint = None
    for target in essentials.alertTargetIDs:
        found = _ONLINE_ENDPOINT.search(target)
        if found:
            endpoint = found.group(1)
            break
    overrides = {"endpoint": endpoint if not common.first(labels, common.ENDPOINT_KEYS) else None,
                 "version": None if common.first(labels, common.VERSION_KEYS)
                 else labels.get("deployment") or labels.get("Deployment")}
    kind = common.classify(labels, essentials.alertRule, *metric_names)
    resolved = essentials.monitorCondition == "Resolved"
    title = essentials.alertRule + (f": {essentials.description}" if essentials.description
                                    else "")
    return common.AlertBatch([common.build(
        source=SOURCE, kind=kind, labels=labels, title=title,
        status="resolved" if resolved else "firing",
        severity_name=AZURE_SEVERITY.get(essentials.severity.strip().lower(),
                                         common.severity(essentials.severity)),
        figures=figures, fingerprint_value=common.fingerprint(SOURCE, essentials.alertId),
        started=common.utc(essentials.firedDateTime).isoformat(),
        occurred_at=(essentials.resolvedDateTime if resolved and essentials.resolvedDateTime
                     else essentials.firedDateTime),
        overrides=overrides)])
