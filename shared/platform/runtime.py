"""The adapters a running handler uses, built once per worker process from the settings."""

from __future__ import annotations

from functools import lru_cache

from shared.platform.logs import configure_logging
from shared.platform.settings import Settings


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings, read once per worker; reading them also sets the log format they name (here,
    not at app import, so that a cold start does not pay for pydantic-settings)."""
    loaded = Settings.from_env()
    configure_logging(loaded.log_format)
    return loaded


@lru_cache(maxsize=1)
def bus():
    from shared.platform.bus import Bus
    from shared.platform.storage import storage_connection_string

    return Bus(storage_connection_string())


@lru_cache(maxsize=1)
def idempotency():
    from shared.platform.idempotency import IdempotencyStore
    from shared.platform.storage import storage_connection_string

    return IdempotencyStore.connect(storage_connection_string())


def reset() -> None:
    """Forget cached adapters (tests that change the environment)."""
    for cached in (settings, bus, idempotency):
        cached.cache_clear()
