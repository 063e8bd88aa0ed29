"""The serving backend the settings choose: Databricks Model Serving when a workspace is
configured (DATABRICKS_HOST, with DATABRICKS_TOKEN or the SDK's other auth), else the embedded
server at GATEHOUSE_SERVING_URL."""

from __future__ import annotations

from shared.foundation import runtime
from shared.foundation.settings import Settings
from shared.serving.base import ServingBackend, ServingError


def serving_backend(settings: Settings | None = None) -> ServingBackend:
    settings = runtime.settings() if settings is None else settings
    host = settings.databricks_host
    if host:
        from shared.serving.databricks import DatabricksServing

        return DatabricksServing.from_env(host, settings.databricks_token)
    url = settings.serving_url
    if not url:
        raise ServingError("no serving backend configured: set DATABRICKS_HOST (Databricks Model "
                           "Serving) or GATEHOUSE_SERVING_URL (the embedded server, "
                           "`python -m shared.serving.embedded`)")
    from shared.serving.embedded_client import EmbeddedServing

    return EmbeddedServing(url)
