"""What the monitor's HTTP routes take and answer (functions/monitor.py is their shell).

- POST /api/monitor/run: optional body `RunNow`; 200 with the run's summary, 503 when there is
  nothing to monitor (no payload log, no inference table).
- POST /api/monitor/labels/{endpoint}: body `LateLabels`; 202 stored, 400 a label is not a
  number, 413 too many labels in one call, 503 storage unavailable (with Retry-After).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.foundation.failpoints import failpoint
from shared.foundation.http import Reply, error_reply, unavailable
from shared.monitoring.adapters import NotConfigured
from shared.monitoring.labels import label_value

log = logging.getLogger("gatehouse.monitor")
MAX_LABELS_PER_CALL = 10_000
MAX_PROBLEMS = 50
MAX_REQUEST_ID = 512     # characters; request ids are ids, not documents


class RunNow(BaseModel):
    EXPECTED: ClassVar[str] = '{"now": <epoch seconds>}, or no body at all'
    model_config = ConfigDict(extra="forbid")

    now: float | None = Field(default=None, gt=0, strict=True, allow_inf_nan=False,
                              description="judge the windows complete at this time (epoch s)")


RequestId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_REQUEST_ID)]


class LateLabels(BaseModel):
    EXPECTED: ClassVar[str] = '{"labels": {"<request id>": <label>, ...}} with at least one label'

    labels: dict[RequestId, Any] = Field(min_length=1)


class LabelSink(Protocol):
    def put(self, endpoint: str, labels: Mapping[str, object]) -> int: ...


def run_now(request: RunNow, run: Callable[[float], dict]) -> Reply:
    try:
        return Reply(200, run(time.time() if request.now is None else request.now))
    except NotConfigured as exc:
        return error_reply(503, str(exc))


def store_labels(endpoint: str, request: LateLabels, sink: Callable[[], LabelSink]) -> Reply:
    """Check every label, then store them all; `sink` opens the store (it may fail: a 503)."""
    labels = request.labels
    if len(labels) > MAX_LABELS_PER_CALL:
        return error_reply(413, f"{len(labels)} labels; at most {MAX_LABELS_PER_CALL} per call")
    problems = _label_problems(labels)
    if problems:
        return error_reply(400, "some labels are not numbers", problems[:MAX_PROBLEMS])
    try:
        stored = sink().put(endpoint, labels)
    except Exception:
        log.exception("could not store labels for %s", endpoint)
        return unavailable("Gatehouse storage unavailable; retry shortly")
    failpoint("monitor.labels_stored")  # a redo stores the same labels again: last write wins
    return Reply(202, {"status": "stored", "endpoint": endpoint, "labels": stored})


def _label_problems(labels: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, value in labels.items():
        try:
            label_value(value)
        except ValueError as exc:
            problems.append(f"labels.{key[:80]}: {exc}")
    return problems
