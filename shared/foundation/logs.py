"""Structured logs: one JSON object per record, carrying the event the invocation works on.

A queue handler sets the event once, where it parsed the envelope (`process_event` does it, or
`with log_context(envelope):`); every record logged inside, by any module, then carries its
`event_id`, `event_type`, `model`, `version` and `endpoint`, so one model version's story can be
filtered out of the Functions host's logs. The context is a contextvar, reset when the
invocation ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

EVENT_FIELDS = ("event_id", "event_type", "model", "version", "endpoint")

# None until an invocation sets its event (a shared mutable default would leak between contexts)
_event: ContextVar[Mapping[str, str] | None] = ContextVar("gatehouse_log_event", default=None)


def event_fields(envelope) -> dict[str, str]:
    """The log fields of an Envelope (or of its JSON document), whatever its payload type;
    those the event does not have are left out."""
    if isinstance(envelope, Mapping):
        given = envelope.get("data")
        data: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        found = {"event_id": envelope.get("id"), "event_type": envelope.get("type"),
                 "model": data.get("model_name"), "version": data.get("version"),
                 "endpoint": data.get("endpoint")}
    else:
        data = envelope.data
        found = {"event_id": envelope.id, "event_type": envelope.type,
                 "model": getattr(data, "model_name", None),
                 "version": getattr(data, "version", None),
                 "endpoint": getattr(data, "endpoint", None)}
    return {name: str(value) for name, value in found.items() if value not in (None, "")}


def current_fields() -> Mapping[str, str]:
    fields = _event.get()
    return {} if fields is None else fields


@contextmanager
def log_context(envelope) -> Iterator[None]:
    """Records logged inside carry the envelope's fields."""
    token = _event.set(event_fields(envelope))
    try:
        yield
    finally:
        _event.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, exception and the event's
    fields (from the context, or given as `extra=`)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EVENT_FIELDS:
            value = getattr(record, name, None) or current_fields().get(name)
            if value:
                document[name] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str)


def configure_logging(log_format: str) -> None:
    """With "json", every root handler formats records as JSON lines; "text" leaves the
    handlers' own format.

    Under the Functions host the worker's handler on the root logger formats each record and sends
    that text to the host (Application Insights `traces.message`), so JSON there makes the event
    fields queryable. Without any handler (a script) one is added on stderr.
    """
    if log_format != "json":
        return
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
