"""The serving backend the settings choose: Databricks Model Serving when a workspace is
configured (DATABRICKS_HOST, with DATABRICKS_TOKEN or the SDK's other auth), else the embedded
server at GATEHOUSE_SERVING_URL."""

from __future__ import annotations

import os

from shared.serving.base import ServingBackend, ServingError


def serving_backend(environ=None) -> ServingBackend:
    environ = os.environ if environ is None else environ
    host = (environ.get("DATABRICKS_HOST") or "").strip()
    if host:
        from shared.serving.databricks import DatabricksServing

        return DatabricksServing.from_env(host, (environ.get("DATABRICKS_TOKEN") or "").strip()
                                          or None)
    url = (environ.get("GATEHOUSE_SERVING_URL") or "").strip()
    if not url:
        raise ServingError("no serving backend configured: set DATABRICKS_HOST (Databricks Model "
                           "Serving) or GATEHOUSE_SERVING_URL (the embedded server, "
                           "`python -m shared.serving.embedded`)")
    from shared.serving.embedded_client import EmbeddedServing

    return EmbeddedServing(url)
