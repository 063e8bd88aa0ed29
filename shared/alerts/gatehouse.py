"""Gatehouse's own monitor format: what shared/monitoring emits, posted by a monitor running
elsewhere (a Databricks job over an inference table, another Function App).

    {"schema": "gatehouse.monitor.alerts/v1",
     "alerts": [{"alert_kind": "feature_drift", "status": "firing", "severity": "warning",
                 "title": "PSI 0.31 on amount", "model_name": "fraud", "version": "3",
                 "endpoint": "fraud-prod", "figures": {"feature_psi": 0.31},
                 "labels": {"metric": "feature_psi", "window": "5731200"},
                 "starts_at": "2025-06-01T12:00:00Z", "at": "2025-06-01T12:05:00Z"}]}

Unknown fields are refused (it is our format: a typo should fail loudly). Without a
`fingerprint`, one is derived from model, version, endpoint, kind and the `metric` label.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.alerts import common
from shared.events import AlertKind, Severity
from shared.foundation.http import json_object, validate

SOURCE = "gatehouse"
SCHEMA = "gatehouse.monitor.alerts/v1"


class WireAlert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_kind: AlertKind
    status: Literal["firing", "resolved"]
    severity: Severity = "warning"
    title: str = Field(min_length=1, max_length=500)
    model_name: str | None = Field(None, min_length=1)
    version: str | None = Field(None, min_length=1)
    endpoint: str | None = Field(None, min_length=1)
    figures: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    fingerprint: str | None = Field(None, min_length=1, max_length=200)
    starts_at: datetime
    at: datetime | None = None


class WireBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_: Literal["gatehouse.monitor.alerts/v1"] = Field(alias="schema")
    alerts: list[WireAlert] = Field(min_length=1, max_length=1000)


def wire_fingerprint(model_name: str | None, version: str | None, endpoint: str | None,
                     kind: AlertKind | str, metric: str | None) -> str:
    kind_value = kind.value if isinstance(kind, AlertKind) else kind
    return common.fingerprint(SOURCE, model_name or "", version or "", endpoint or "",
                              kind_value, metric or "")


def parse(body: bytes) -> common.AlertBatch:
    batch = validate(WireBatch, json_object(body), what="Gatehouse monitor payload")
    parsed = []
    for item in batch.alerts:
        fingerprint = item.fingerprint or wire_fingerprint(
            item.model_name, item.version, item.endpoint, item.alert_kind,
            item.labels.get("metric"))
        parsed.append(common.build(
            source=SOURCE, kind=item.alert_kind, labels=common.clean_labels(item.labels),
            title=item.title, status=item.status, severity_name=item.severity,
            figures=item.figures, fingerprint_value=fingerprint,
            started=common.utc(item.starts_at).isoformat(),
            occurred_at=item.at or item.starts_at,
            overrides={"model_name": item.model_name, "version": item.version,
                       "endpoint": item.endpoint}))
    return common.AlertBatch(parsed)
