"""HTTP receivers for registry webhooks (MLflow OSS and Databricks) and the health probe.

Cold start: this module imports only azure.functions and shared.foundation.http; the schema, the
receiver and the storage SDKs load inside the handlers, on the first request that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

from shared.foundation.http import Reply, respond

if TYPE_CHECKING:
    from shared.intake.receiver import Sender

bp = func.Blueprint()


def _receive(sender: Sender, req: func.HttpRequest) -> func.HttpResponse:
    from shared.foundation import runtime
    from shared.intake import receiver

    return respond(receiver.receive(sender, req.headers, req.get_body() or b"", runtime.settings(),
                                    queue=runtime.bus()))


@bp.route(route="registry/mlflow", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def mlflow_registry_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """MLflow OSS registry webhooks, authenticated by their HMAC signature."""
    return _receive("mlflow", req)


@bp.route(route="registry/databricks", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def databricks_registry_webhook(req: func.HttpRequest) -> func.HttpResponse:
    """Databricks workspace-registry webhooks, authenticated by X-Databricks-Signature."""
    return _receive("databricks", req)


@bp.route(route="registry/forwarded", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def forwarded_registry_event(req: func.HttpRequest) -> func.HttpResponse:
    """Registry events forwarded by Gatehouse's Databricks model-update-trigger task (Unity
    Catalog has no webhooks), signed with X-Gatehouse-Signature."""
    return _receive("forwarded", req)


@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    from shared.events import SCHEMA_VERSION
    from shared.foundation import runtime

    settings = runtime.settings()
    return respond(Reply(200, {
        "status": "ok",
        "schema_version": SCHEMA_VERSION,
        "mlflow_signatures_required": bool(settings.mlflow_webhook_secret),
        "databricks_signatures_required": bool(settings.databricks_webhook_secret),
    }))
