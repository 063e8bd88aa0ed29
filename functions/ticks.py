"""One endpoint's turn of a periodic job, fanned out by its timer (shared/foundation/fanout.py).

- ramp_tick      queue `ramp-ticks`     (the ramp timer in functions/rollout.py enqueues them)
- monitor_tick   queue `monitor-ticks`  (the monitor timer in functions/monitor.py enqueues them)

Cold start: only azure.functions and shared.foundation.queues at module level.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.queues import MONITOR_TICKS, RAMP_TICKS

bp = func.Blueprint()
log = logging.getLogger("gatehouse.ticks")


@bp.queue_trigger(arg_name="msg", queue_name=RAMP_TICKS, connection="AzureWebJobsStorage")
def ramp_tick(msg: func.QueueMessage) -> None:
    from shared.foundation.fanout import take_tick
    from shared.rollout.service import ramp_one

    take_tick(msg.get_body(), RAMP_TICKS, "ramp_tick", ramp_one)


@bp.queue_trigger(arg_name="msg", queue_name=MONITOR_TICKS, connection="AzureWebJobsStorage")
def monitor_tick(msg: func.QueueMessage) -> None:
    from shared.foundation.fanout import take_tick
    from shared.monitoring.adapters import monitor_one

    take_tick(msg.get_body(), MONITOR_TICKS, "monitor_tick", monitor_one)
