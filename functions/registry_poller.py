"""Timer: poll a registry that sends no webhooks (Unity Catalog, or any MLflow registry).

Active when GATEHOUSE_POLL_REGISTRY_URI is set (e.g. `databricks-uc`, or an MLflow server URL);
GATEHOUSE_POLL_MODELS limits it to a comma-separated list of models. Every minute by default.
"""

from __future__ import annotations

import logging

import azure.functions as func

bp = func.Blueprint()
log = logging.getLogger("gatehouse.poller")


@bp.timer_trigger(arg_name="timer", schedule="0 */1 * * * *", run_on_startup=False)
def poll_registry(timer: func.TimerRequest) -> None:
    from shared.foundation import runtime

    settings = runtime.settings()
    registry_uri = settings.poll_registry_uri
    if not registry_uri:
        log.debug("registry poller is off (GATEHOUSE_POLL_REGISTRY_URI is not set)")
        return
    from mlflow import MlflowClient

    from shared.foundation.queues import REGISTRY_EVENTS
    from shared.foundation.state import StateTable
    from shared.intake import poller

    models = settings.poll_model_names()
    tracking_uri = settings.mlflow_tracking_uri or registry_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    store = poller.SnapshotStore(StateTable(runtime.storage_connection(), poller.TABLE),
                                 registry_uri)
    emitted = poller.poll_once(client, store, lambda e: runtime.bus().send(REGISTRY_EVENTS, e),
                               poller.registry_kind(registry_uri), models or None)
    log.info("registry poll of %s: %d change(s)", registry_uri, len(emitted))
