"""OpenTelemetry spans for the queue handlers, in the trace each envelope's `traceparent` names.

Off by default. With APPLICATIONINSIGHTS_CONNECTION_STRING set, the first event handled
configures the Azure Monitor OpenTelemetry distro (`azure-monitor-opentelemetry`, installed
separately) and each handled event becomes a consumer span whose parent is the span that
emitted it. Without the setting nothing from OpenTelemetry is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from shared.events import Envelope

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
log = logging.getLogger("gatehouse.tracing")


@cache
def enabled() -> bool:
    """Whether spans are exported: the connection string is set and the distro configured."""
    if not os.environ.get(CONNECTION_STRING):
        return False
    try:
        from azure.monitor.opentelemetry import configure_azure_monitor
    except ImportError:
        log.warning("%s is set but azure-monitor-opentelemetry is not installed: no traces",
                    CONNECTION_STRING)
        return False
    configure_azure_monitor()
    return True


@contextmanager
def event_span(envelope: Envelope, handler: str) -> Iterator[None]:
    """A span for `handler` handling `envelope`, child of the span that emitted it."""
    if not enabled():
        yield
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": envelope.traceparent} if envelope.traceparent else {}
    parent = TraceContextTextMapPropagator().extract(carrier)
    with trace.get_tracer("gatehouse").start_as_current_span(
            handler, context=parent, kind=trace.SpanKind.CONSUMER,
            attributes={"cloudevents.event_id": envelope.id,
                        "cloudevents.event_type": envelope.type,
                        "cloudevents.event_source": envelope.source}):
        yield
