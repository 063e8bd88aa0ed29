"""Monitoring alert intake: POST /api/alerts/{source}.

source: azure-monitor (common alert schema), alertmanager (webhook v4), databricks-sql (SQL
alert webhook destination), gatehouse (Gatehouse's own monitor format). Each alert becomes one
`monitoring.alert` event on the bus, once (shared/alerts/intake.py says how and what answers).

Cold start: only azure.functions and shared.foundation.http at module level.
"""

from __future__ import annotations

from functools import lru_cache

import azure.functions as func

from shared.foundation.http import respond, unavailable

bp = func.Blueprint()


@lru_cache(maxsize=4)
def _open_alerts(connection_string: str):
    from shared.alerts.store import OpenAlerts

    return OpenAlerts.connect(connection_string)


@bp.route(route="alerts/{source}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def receive_alert(req: func.HttpRequest) -> func.HttpResponse:
    from shared.alerts import SOURCES, intake
    from shared.foundation import runtime

    source = req.route_params.get("source", "")
    if source not in SOURCES:
        return respond(intake.unknown_source(source))
    try:
        open_alerts = _open_alerts(runtime.storage_connection())
        dedupe = runtime.idempotency()
    except Exception:
        return respond(unavailable(intake.STORAGE_UNAVAILABLE))
    return respond(intake.receive(
        source, dict(req.headers), req.get_body() or b"",
        max_body_bytes=runtime.settings().max_body_bytes, bus=runtime.bus(), dedupe=dedupe,
        open_alerts=open_alerts))
