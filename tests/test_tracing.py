"""Tracing across the queues: off by default (nothing from OpenTelemetry imported), and when on,
a handled event's span is the child of the span its traceparent names."""

from __future__ import annotations

import subprocess
import sys

from shared import events
from shared.events import Envelope
from shared.foundation import tracing


def test_off_by_default_imports_nothing_from_opentelemetry():
    code = ("import sys; from shared.foundation import tracing; from shared.events import "
            "Envelope, ModelVersionCreated as M\n"
            "e = Envelope.wrap(M(model_name='m', version='1'), source='/t')\n"
            "with tracing.event_span(e, 'h'): pass\n"
            "assert not tracing.enabled()\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True)
    assert found.stdout.strip() == "[]"


def test_a_handled_event_is_a_child_of_the_span_that_emitted_it(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr("opentelemetry.trace.get_tracer",
                        lambda name, *a, **k: provider.get_tracer(name))
    monkeypatch.setattr(tracing, "enabled", lambda: True)  # what the connection string turns on
    cause = Envelope.wrap(events.ModelVersionCreated(model_name="m", version="1"), source="/t",
                          dedupe_key="d-1")
    with tracing.event_span(cause, "run_gates"):
        pass
    [span] = exporter.get_finished_spans()
    _, trace_id, parent_id, _ = (cause.traceparent or "").split("-")
    assert span.name == "run_gates"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    assert span.attributes["cloudevents.event_id"] == cause.id
