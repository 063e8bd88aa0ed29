"""The monitor: every five minutes (and on demand) judge the served traffic's latest windows
against each version's reference, log the figures to MLflow and publish `monitoring.alert`s.

- monitor_endpoints   timer, NCRONTAB "0 */5 * * * *"
- POST /api/monitor/run                 run it now; body (optional): {"now": <epoch seconds>}
- POST /api/monitor/labels/{endpoint}   late labels: {"labels": {"<request id>": 1, ...}}

Cold start: only azure.functions at module level.
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("gatehouse.monitor")
MAX_LABELS_PER_CALL = 10_000


def _json(status: int, body: dict) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, default=str), status_code=status,
                             mimetype="application/json")


def run_monitor(now: float | None = None) -> dict:
    import time

    from shared.monitoring.adapters import build_monitor

    return build_monitor().run(time.time() if now is None else now)


@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False,
                  use_monitor=False)
def monitor_endpoints(timer: func.TimerRequest) -> None:
    from shared.monitoring.adapters import NotConfigured

    try:
        summary = run_monitor()
    except NotConfigured as exc:
        log.debug("monitor is off: %s", exc)
        return
    alerts = sum(len(e["alerts"]) for e in summary["endpoints"].values())
    log.info("monitor: %d endpoint(s) up to window %s, %d alert(s)", len(summary["endpoints"]),
             summary["windows_up_to"], alerts)


@bp.route(route="monitor/run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def monitor_now(req: func.HttpRequest) -> func.HttpResponse:
    from shared.monitoring.adapters import NotConfigured

    body = req.get_body() or b""
    now = None
    if body.strip():
        try:
            document = json.loads(body)
        except ValueError as exc:
            return _json(400, {"error": f"body is not JSON: {exc}"})
        if not isinstance(document, dict) or set(document) - {"now"}:
            return _json(400, {"error": "the body is optional; if given: {\"now\": <epoch "
                                        "seconds>}"})
        now = document.get("now")
        if now is not None and (isinstance(now, bool) or not isinstance(now, (int, float))
                                or now <= 0):
            return _json(400, {"error": "now must be epoch seconds (a positive number)"})
    try:
        return _json(200, run_monitor(now))
    except NotConfigured as exc:
        return _json(503, {"error": str(exc)})


@bp.route(route="monitor/labels/{endpoint}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def receive_labels(req: func.HttpRequest) -> func.HttpResponse:
    from shared.monitoring.adapters import label_store
    from shared.monitoring.labels import label_value
    from shared.platform.storage import storage_connection_string

    endpoint = req.route_params.get("endpoint", "")
    try:
        document = json.loads(req.get_body() or b"")
    except ValueError as exc:
        return _json(400, {"error": f"body is not JSON: {exc}"})
    labels = document.get("labels") if isinstance(document, dict) else None
    if not isinstance(labels, dict) or not labels:
        return _json(400, {"error": "expected {\"labels\": {\"<request id>\": <label>, ...}} "
                                    "with at least one label"})
    if len(labels) > MAX_LABELS_PER_CALL:
        return _json(413, {"error": f"{len(labels)} labels; at most {MAX_LABELS_PER_CALL} "
                                    f"per call"})
    problems = []
    for key, value in labels.items():
        try:
            label_value(value)
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
    if problems:
        return _json(400, {"error": "some labels are not numbers", "problems": problems[:50]})
    try:
        stored = label_store(storage_connection_string()).put(endpoint, labels)
    except Exception:
        log.exception("could not store labels for %s", endpoint)
        return _json(503, {"error": "Gatehouse storage unavailable; retry shortly"})
    return _json(202, {"status": "stored", "endpoint": endpoint, "labels": stored})
