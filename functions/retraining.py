"""React to monitoring alerts (the router forwards every `monitoring.alert` to trigger-retraining):
request a rollback when the alert implicates a canary's challenger, and start the model's
retraining when the policy says so (shared/monitoring/reactions.py).

Cold start: only azure.functions at module level.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.foundation.queues import TRIGGER_RETRAINING

bp = func.Blueprint()
log = logging.getLogger("gatehouse.retraining")


def handle(body: bytes, reactions=None) -> dict | None:
    from shared.events import MonitoringAlert
    from shared.foundation.handling import process_event
    from shared.monitoring.reactions import reactions_from_env

    def react(envelope, alert) -> dict | None:
        result = (reactions or reactions_from_env()).react(envelope)
        log.info("alert %s (%s): %s", envelope.id, alert.fingerprint, result)
        return result

    return process_event(body, MonitoringAlert, "trigger_retraining", react,
                         queue=TRIGGER_RETRAINING)


@bp.queue_trigger(arg_name="msg", queue_name=TRIGGER_RETRAINING, connection="AzureWebJobsStorage")
def trigger_retraining(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
