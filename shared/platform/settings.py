"""Gatehouse settings, read from the environment (App Settings in Azure, local.settings.json locally).

Secrets are held here and nowhere else; `__repr__` never shows them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from shared.platform.storage import PROJECT_ROOT


def _number(name: str, default: float, minimum: float = 0) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"setting {name}={raw!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"setting {name}={raw!r} must be at least {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    mlflow_webhook_secret: str | None = field(default=None, repr=False)
    databricks_webhook_secret: str | None = field(default=None, repr=False)
    forwarder_secret: str | None = field(default=None, repr=False)
    webhook_tolerance_seconds: float = 300.0
    max_body_bytes: int = 1_048_576
    delivery_ttl_seconds: float = 7 * 24 * 3600
    outbox_path: Path = PROJECT_ROOT / ".gatehouse" / "outbox.jsonl"
    source_name: str = "gatehouse"

    @classmethod
    def from_env(cls) -> "Settings":
        outbox = os.environ.get("GATEHOUSE_OUTBOX_PATH", "").strip()
        return cls(
            mlflow_webhook_secret=os.environ.get("GATEHOUSE_MLFLOW_WEBHOOK_SECRET") or None,
            databricks_webhook_secret=os.environ.get("GATEHOUSE_DATABRICKS_WEBHOOK_SECRET") or None,
            forwarder_secret=os.environ.get("GATEHOUSE_FORWARDER_SECRET") or None,
            webhook_tolerance_seconds=_number("GATEHOUSE_WEBHOOK_TOLERANCE_SECONDS", 300.0),
            max_body_bytes=int(_number("GATEHOUSE_MAX_BODY_BYTES", 1_048_576, minimum=1)),
            delivery_ttl_seconds=_number("GATEHOUSE_DELIVERY_TTL_SECONDS", 7 * 24 * 3600, 1),
            outbox_path=Path(outbox) if outbox else cls.outbox_path,
        )
