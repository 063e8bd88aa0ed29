"""Monitoring alerts from the systems teams already run, normalised into MonitoringAlert.

    batch = parse_alerts("alertmanager", body)   # AlertBatch: .alerts (InboundAlert), .ignored

Sources: azure-monitor (common alert schema), alertmanager (webhook v4), databricks-sql (SQL
alert webhook destination), gatehouse (shared/monitoring's own format). Pure; bad bodies raise
shared.foundation.http.BodyError naming what is wrong.
"""

from __future__ import annotations

from shared.alerts.common import AlertBatch, InboundAlert

SOURCES = ("azure-monitor", "alertmanager", "databricks-sql", "gatehouse")


def parse_alerts(source: str, body: bytes) -> AlertBatch:
    if source == "azure-monitor":
        from shared.alerts.azure_monitor import parse
    elif source == "alertmanager":
        from shared.alerts.alertmanager import parse
    elif source == "databricks-sql":
        from shared.alerts.databricks_sql import parse
    elif source == "gatehouse":
        from shared.alerts.gatehouse import parse
    else:
        raise KeyError(f"unknown alert source {source!r}; known: {', '.join(SOURCES)}")
    return parse(body)


__all__ = ["AlertBatch", "InboundAlert", "SOURCES", "parse_alerts"]
