"""The monitor: every five minutes (and on demand) judge the served traffic's latest windows
against each version's reference, log the figures to MLflow and publish `monitoring.alert`s.

- monitor_endpoints   timer, NCRONTAB "0 */5 * * * *": one tick per endpoint due on queue
                      `monitor-ticks` (functions/ticks.py judges each)
- POST /api/monitor/run                 run it now; body (optional): {"now": <epoch seconds>}
- POST /api/monitor/labels/{endpoint}   late labels: {"labels": {"<request id>": 1, ...}}

Cold start: only azure.functions and shared.foundation.http at module level.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.http import BodyError, parse_body, respond

bp = func.Blueprint()
log = logging.getLogger("gatehouse.monitor")


def run_monitor(now: float) -> dict:
    from shared.monitoring.adapters import build_monitor

    return build_monitor().run(now)


@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False,
                  use_monitor=False)
def monitor_endpoints(timer: func.TimerRequest) -> None:
    import time

    from shared.foundation import runtime
    from shared.foundation.fanout import TickMarks
    from shared.monitoring.adapters import NotConfigured, build_monitor
    from shared.monitoring.service import enqueue_ticks

    try:
        monitor = build_monitor()
    except NotConfigured as exc:
        log.debug("monitor is off: %s", exc)
        return
    marks = TickMarks.connect(runtime.storage_connection())
    sent = enqueue_ticks(monitor, time.time(), marks, runtime.bus().send)
    log.info("monitor: %d tick(s) enqueued", len(sent))


@bp.route(route="monitor/run", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def monitor_now(req: func.HttpRequest) -> func.HttpResponse:
    from shared.monitoring.routes import RunNow, run_now

    try:
        request = parse_body(RunNow, req.get_body(), optional=True)
    except BodyError as exc:
        return respond(exc.reply())
    return respond(run_now(request, run_monitor))


@bp.route(route="monitor/labels/{endpoint}", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def receive_labels(req: func.HttpRequest) -> func.HttpResponse:
    from shared.foundation import runtime
    from shared.monitoring.adapters import label_store
    from shared.monitoring.routes import LateLabels, store_labels

    try:
        request = parse_body(LateLabels, req.get_body())
    except BodyError as exc:
        return respond(exc.reply())
    return respond(store_labels(req.route_params.get("endpoint", ""), request,
                                lambda: label_store(runtime.storage_connection())))
