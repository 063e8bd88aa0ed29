"""React to monitoring alerts (the router forwards every `monitoring.alert` to trigger-retraining):
request a rollback when the alert implicates a canary's challenger, and start the model's
retraining when the policy says so (shared/monitoring/reactions.py).

Cold start: only azure.functions at module level.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.logs import event_log_context
from shared.foundation.queues import TRIGGER_RETRAINING

bp = func.Blueprint()
log = logging.getLogger("gatehouse.retraining")


def handle(body: bytes, reactions=None) -> dict | None:
    from shared.events import Envelope, MonitoringAlert
    from shared.foundation import runtime
    from shared.foundation.handling import process_once

    envelope = Envelope.from_json_expecting(body, MonitoringAlert)
    alert = envelope.data_as(MonitoringAlert)
    if reactions is None:
        from shared.monitoring.reactions import reactions_from_env

        reactions = reactions_from_env()
    result = process_once(runtime.idempotency(), "trigger_retraining", envelope.id,
                          lambda: reactions.react(envelope))
    log.info("alert %s (%s): %s", envelope.id, alert.fingerprint, result)
    return result


@bp.queue_trigger(arg_name="msg", queue_name=TRIGGER_RETRAINING, connection="AzureWebJobsStorage")
@event_log_context
def trigger_retraining(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
