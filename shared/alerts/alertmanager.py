"""Prometheus Alertmanager's webhook (`webhook_config`, payload version 4).

One POST carries a group of alerts; each becomes its own MonitoringAlert. Labels are the group's
common labels overlaid with the alert's own; the kind comes from an `alert_kind` label or the
`alertname`; the severity from the `severity` label; figures from numeric annotations (a
`value` annotation holding `{{ $value }}` is the usual one). The fingerprint is Alertmanager's
own (a hash of the alert's labels), so the resolved notification matches the firing one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from shared.alerts import common
from shared.foundation.http import BodyError, json_object, validate

SOURCE = "alertmanager"
SUPPORTED_VERSION = "4"


class AlertmanagerAlert(common.Lenient):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime
    endsAt: datetime | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None
    values: dict[str, float] | None = None  # Grafana's Alertmanager-compatible sender adds these


class AlertmanagerWebhook(common.Lenient):
    version: str
    groupKey: str
    truncatedAlerts: int = Field(0, ge=0)
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    alerts: list[AlertmanagerAlert] = Field(min_length=1)


def _figures(alert: AlertmanagerAlert) -> dict[str, float]:
    figures = {}
    for key, text in alert.annotations.items():
        value = common.number(text)
        if value is not None:
            figures[key] = value
    for key, value in (alert.values or {}).items():
        if common.number(value) is not None:
            figures[key] = float(value)
    return figures


def parse(body: bytes) -> common.AlertBatch:
    document = json_object(body)
    version = document.get("version")
    if version is not None and str(version) != SUPPORTED_VERSION:
        raise BodyError(f"Alertmanager webhook version {version!r} is not supported; "
                           f"Gatehouse reads version {SUPPORTED_VERSION}")
    hook = validate(AlertmanagerWebhook, document, what="Alertmanager webhook (version 4)")
    parsed = []
    for alert in hook.alerts:
        labels = common.clean_labels(hook.commonLabels, alert.labels)
        name = labels.get("alertname", "")
        summary = (alert.annotations.get("summary") or hook.commonAnnotations.get("summary")
                   or alert.annotations.get("description") or "")
        title = f"{name}: {summary}" if name and summary else (name or summary)
        kind = common.classify(labels, name, labels.get("metric"), labels.get("__name__"))
        stable = (f"{SOURCE}:{alert.fingerprint}" if alert.fingerprint
                  else common.fingerprint(SOURCE, *sorted(alert.labels.items())))
        occurred = alert.endsAt if alert.status == "resolved" and alert.endsAt else alert.startsAt
        parsed.append(common.build(
            source=SOURCE, kind=kind, labels=labels, title=title or hook.groupKey,
            status=alert.status, severity_name=common.severity(labels.get("severity")),
            figures=_figures(alert), fingerprint_value=stable,
            started=common.utc(alert.startsAt).isoformat(), occurred_at=occurred))
    ignored = ([f"{hook.truncatedAlerts} alert(s) were truncated by Alertmanager's max_alerts"]
               if hook.truncatedAlerts else [])
    return common.AlertBatch(parsed, ignored)
