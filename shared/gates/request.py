"""What asks for a gate run (pure): a new model version, or a re-run request carried by the tag
`gatehouse.rerun=<value>` on a version. Each new value runs the suite again, once.

A re-run request arrives from POST /api/gates/{model}/{version}/run (which enqueues the tag event
built here on run-gates) or from the registry, when someone sets the tag in MLflow. Gatehouse's
own `gatehouse.gates.*` tags never start a run.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from shared.events import Envelope, ModelVersionCreated, ModelVersionTagSet, Payload

RERUN_TAG = "gatehouse.rerun"
RERUN_REASON_TAG = "gatehouse.rerun.reason"
API_SOURCE = "/gatehouse/api/gates"


@dataclass(frozen=True)
class GateRequest:
    model_name: str
    version: str
    registry: str
    rerun: str | None = None
    requested_by: str | None = None
    reason: str | None = None

    @property
    def key(self) -> str:
        """The idempotency key: once per version, and once per re-run value."""
        base = f"{self.model_name}/{self.version}"
        return f"{base}/rerun/{self.rerun}" if self.rerun else base


def gate_request(data: Payload) -> GateRequest | None:
    """What an event asks of the run-gates handler; None for events it does not act on."""
    if isinstance(data, ModelVersionCreated):
        return GateRequest(data.model_name, data.version, data.registry)
    if isinstance(data, ModelVersionTagSet) and data.tags.get(RERUN_TAG, "").strip():
        return GateRequest(data.model_name, data.version, data.registry,
                           rerun=data.tags[RERUN_TAG].strip(), requested_by=data.actor,
                           reason=data.tags.get(RERUN_REASON_TAG))
    return None


class RerunBody(BaseModel):
    """The optional JSON body of POST /api/gates/{model}/{version}/run. The same rerun_id is the
    same request (a retried POST runs once); without one, every POST is a new request."""

    model_config = ConfigDict(extra="forbid")
    rerun_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    requested_by: str | None = Field(None, min_length=1, max_length=200)
    reason: str | None = Field(None, min_length=1, max_length=1000)


def rerun_event(model_name: str, version: str, rerun_id: str, body: RerunBody) -> Envelope:
    """The tag event a re-run request puts on run-gates; its id follows from the rerun_id."""
    tags = {RERUN_TAG: rerun_id}
    if body.reason:
        tags[RERUN_REASON_TAG] = body.reason
    return Envelope.wrap(
        ModelVersionTagSet(model_name=model_name, version=version, tags=tags,
                           actor=body.requested_by or "api"),
        source=API_SOURCE, dedupe_key=f"{model_name}/{version}/{rerun_id}")
