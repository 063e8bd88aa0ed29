"""The adapters a running handler uses, built once per worker process from the settings."""

from __future__ import annotations

from functools import lru_cache

from shared.foundation.logs import configure_logging
from shared.foundation.settings import Settings
from shared.foundation.storage import storage_connection_string


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings, read once per worker; reading them also sets the log format they name (here,
    not at app import, so that a cold start does not pay for pydantic-settings)."""
    loaded = Settings.from_env()
    configure_logging(loaded.log_format)
    return loaded


def storage_connection() -> str:
    """The storage account of AzureWebJobsStorage (or its identity-based form)."""
    app = settings()
    return storage_connection_string(app.storage_connection or "", app.storage_account_name,
                                     app.storage_client_id)


@lru_cache(maxsize=1)
def bus():
    from shared.foundation.bus import Bus

    return Bus(storage_connection())


@lru_cache(maxsize=1)
def idempotency():
    """Idempotency records whose lease is one function timeout: no invocation holds a key
    longer without renewing it, and a crashed one frees it within that time."""
    from shared.foundation.idempotency import DEFAULT_LEASE_SECONDS, IdempotencyStore
    from shared.foundation.storage import app_function_timeout

    return IdempotencyStore.connect(storage_connection(),
                                    lease_seconds=app_function_timeout() or DEFAULT_LEASE_SECONDS)


@lru_cache(maxsize=1)
def failures():
    from shared.foundation.failures import FailureLog

    return FailureLog.connect(storage_connection())


def reset() -> None:
    """Forget cached adapters (tests that change the environment)."""
    for cached in (settings, bus, idempotency, failures):
        cached.cache_clear()
