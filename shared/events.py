"""Gatehouse's typed event schema: a CloudEvents 1.0 envelope around one typed payload.

Every inbound format (MLflow OSS webhooks, Databricks registry webhooks, monitoring alerts) is
normalised into these events, and every handler emits them. The payload's `kind` is the
discriminator; the envelope's `type` is `TYPE_PREFIX + kind`.
"""

from __future__ import annotations

import builtins
import hashlib
import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

SCHEMA_VERSION = "1.0"
TYPE_PREFIX = "io.gatehouse."
EVENT_ID_NAMESPACE = uuid.UUID("6f1c7c55-3a4e-4f4e-9a55-6a0d9b8c2e11")
# W3C Trace Context `traceparent`, version 00: trace id, parent (span) id, flags (01: sampled).
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"


def traceparent_for(event_id: str, trace_id: str | None = None) -> str:
    """The `traceparent` of the event `event_id`: in trace `trace_id` (a new one, named by the
    event id, when None), with a span id derived from the event id, so a redelivered or
    re-derived event carries the same one (event ids are deterministic)."""
    digest = hashlib.sha256(event_id.encode()).hexdigest()
    trace = trace_id or digest[32:64]
    return f"00-{trace}-{digest[:16]}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    return traceparent.split("-")[1] if traceparent else None

Registry = Literal["mlflow", "databricks", "unity-catalog"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


# Inside Envelope the name `type` is its CloudEvents field, so annotations there use this alias.
PayloadClass = type[Payload]
PayloadT = TypeVar("PayloadT", bound=Payload)


def kind_of(payload_class: PayloadClass) -> str:
    """The `kind` an event class declares: its discriminator, a literal with that default."""
    return str(payload_class.model_fields["kind"].default)


class ModelRef(Payload):
    """Fields shared by events about one registered model."""

    model_name: str = Field(min_length=1)
    registry: Registry = "mlflow"


class Decision(Payload):
    """Who decided a stage transition, why, and the figures that justified it."""

    actor: str = Field(min_length=1, description="user, service principal or 'gatehouse'")
    reason: str = Field(min_length=1)
    metrics: dict[str, float] = Field(default_factory=dict)


# ---- registry events (normalised from MLflow OSS and Databricks webhooks) ----

class RegisteredModelCreated(ModelRef):
    kind: Literal["registered_model.created"] = "registered_model.created"
    tags: dict[str, str] = Field(default_factory=dict)
    description: str | None = None


class ModelVersionCreated(ModelRef):
    kind: Literal["model_version.created"] = "model_version.created"
    version: str = Field(min_length=1)
    source: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    description: str | None = None


class ModelVersionTagSet(ModelRef):
    kind: Literal["model_version_tag.set"] = "model_version_tag.set"
    version: str = Field(min_length=1)
    tags: dict[str, str] = Field(min_length=1)
    actor: str | None = None


class ModelVersionTagDeleted(ModelRef):
    kind: Literal["model_version_tag.deleted"] = "model_version_tag.deleted"
    version: str = Field(min_length=1)
    key: str = Field(min_length=1)


class ModelVersionAliasCreated(ModelRef):
    kind: Literal["model_version_alias.created"] = "model_version_alias.created"
    alias: str = Field(min_length=1)
    version: str = Field(min_length=1)


class ModelVersionAliasDeleted(ModelRef):
    kind: Literal["model_version_alias.deleted"] = "model_version_alias.deleted"
    alias: str = Field(min_length=1)


class ModelVersionStageTransitioned(ModelRef):
    """A workspace-registry stage change (Databricks); the lifecycle twin of an alias change."""

    kind: Literal["model_version.stage_transitioned"] = "model_version.stage_transitioned"
    version: str = Field(min_length=1)
    from_stage: str | None = None
    to_stage: str = Field(min_length=1)
    actor: str | None = None


class StageTransitionRequested(ModelRef):
    kind: Literal["model_version.transition_requested"] = "model_version.transition_requested"
    version: str = Field(min_length=1)
    from_stage: str | None = None
    to_stage: str = Field(min_length=1)
    actor: str | None = None
    comment: str | None = None


class RegistryCommentCreated(ModelRef):
    kind: Literal["registry.comment_created"] = "registry.comment_created"
    version: str | None = None
    comment: str
    actor: str | None = None


# ---- events Gatehouse's own handlers emit ----

GateStatus = Literal["pass", "fail", "warn", "inconclusive", "skipped"]


class GateOutcome(Payload):
    name: str
    status: GateStatus
    blocking: bool = True
    observed: float | None = None
    threshold: float | None = None
    detail: str | None = None


class GatesPassed(ModelRef):
    kind: Literal["gates.passed"] = "gates.passed"
    version: str
    report_run_id: str | None = None
    gates: list[GateOutcome] = Field(default_factory=list)
    decision: Decision


class GatesFailed(ModelRef):
    kind: Literal["gates.failed"] = "gates.failed"
    version: str
    report_run_id: str | None = None
    gates: list[GateOutcome] = Field(default_factory=list)
    decision: Decision


class CanaryStarted(ModelRef):
    kind: Literal["rollout.canary_started"] = "rollout.canary_started"
    version: str
    endpoint: str
    champion_version: str | None = None
    traffic_percent: float = Field(gt=0, le=100)
    decision: Decision


class TrafficRamped(ModelRef):
    kind: Literal["rollout.traffic_ramped"] = "rollout.traffic_ramped"
    version: str
    endpoint: str
    from_percent: float = Field(ge=0, le=100)
    to_percent: float = Field(ge=0, le=100)
    decision: Decision


class ModelPromoted(ModelRef):
    kind: Literal["rollout.promoted"] = "rollout.promoted"
    version: str
    endpoint: str | None = None
    previous_champion: str | None = None
    decision: Decision


class RollbackRequested(ModelRef):
    kind: Literal["rollout.rollback_requested"] = "rollout.rollback_requested"
    version: str
    endpoint: str
    decision: Decision


class RollbackCompleted(ModelRef):
    kind: Literal["rollout.rollback_completed"] = "rollout.rollback_completed"
    version: str
    endpoint: str
    restored_version: str | None = None
    decision: Decision


class RolloutStalled(ModelRef):
    """A canary step held past the policy's `max_hold_seconds` without a decision."""

    kind: Literal["rollout.stalled"] = "rollout.stalled"
    version: str
    endpoint: str
    traffic_percent: float = Field(ge=0, le=100)
    held_seconds: float = Field(ge=0)
    time_to_decision_seconds: float | None = Field(
        default=None, ge=0, description="at the observed traffic; None: no estimate (no data)")
    challenger_requests_per_minute: float | None = Field(default=None, ge=0)
    on_stall: Literal["hold", "abort"]
    decision: Decision


class AlertKind(str, Enum):
    FEATURE_DRIFT = "feature_drift"
    CALIBRATION_DRIFT = "calibration_drift"
    PERFORMANCE_DRIFT = "performance_drift"
    PREDICTION_SHIFT = "prediction_shift"
    LATENCY = "latency"
    ERROR_RATE = "error_rate"
    OTHER = "other"


Severity = Literal["info", "warning", "error", "critical"]


class MonitoringAlert(Payload):
    kind: Literal["monitoring.alert"] = "monitoring.alert"
    alert_kind: AlertKind
    source: str = Field(min_length=1,
                        description="azure-monitor, alertmanager, databricks-sql, gatehouse")
    model_name: str | None = None
    version: str | None = None
    endpoint: str | None = None
    severity: Severity = "warning"
    status: Literal["firing", "resolved"] = "firing"
    title: str = Field(min_length=1)
    figures: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    fingerprint: str = Field(min_length=1)


class RetrainingTriggered(ModelRef):
    kind: Literal["retraining.triggered"] = "retraining.triggered"
    reason: str
    alert_fingerprint: str | None = None
    job_run_id: str | None = None
    decision: Decision


class TickDue(Payload):
    """One endpoint's turn of a periodic job, fanned out by the job's timer (one per endpoint and
    tick window; shared/foundation/fanout.py)."""

    kind: Literal["schedule.tick_due"] = "schedule.tick_due"
    job: Literal["ramp", "monitor"]
    endpoint: str = Field(min_length=1)
    window: int = Field(description="the tick window: due_at // the job's period")
    due_at: float = Field(description="epoch seconds the timer ran at")
    expires_at: float = Field(description="a worker drops the tick after this (a newer one "
                                          "repeats its work)")
    labelled: bool = Field(False, description="monitor ticks: the endpoint has late labels")


class NotificationRequested(Payload):
    kind: Literal["notification.requested"] = "notification.requested"
    title: str = Field(min_length=1)
    text: str
    severity: Severity = "info"
    model_name: str | None = None
    version: str | None = None
    about_event_id: str = Field(description="id of the event this notification reports")
    about_event_type: str
    dedup_key: str = Field(min_length=1, description="identical keys within a window collapse")
    links: dict[str, str] = Field(default_factory=dict)
    facts: dict[str, str] = Field(default_factory=dict)


EventData = Annotated[
    RegisteredModelCreated
    | ModelVersionCreated
    | ModelVersionTagSet
    | ModelVersionTagDeleted
    | ModelVersionAliasCreated
    | ModelVersionAliasDeleted
    | ModelVersionStageTransitioned
    | StageTransitionRequested
    | RegistryCommentCreated
    | GatesPassed
    | GatesFailed
    | CanaryStarted
    | TrafficRamped
    | ModelPromoted
    | RollbackRequested
    | RollbackCompleted
    | RolloutStalled
    | MonitoringAlert
    | RetrainingTriggered
    | NotificationRequested
    | TickDue,
    Field(discriminator="kind"),
]

EVENT_CLASSES: tuple[PayloadClass, ...] = get_args(get_args(EventData)[0])
REGISTRY_EVENTS: tuple[PayloadClass, ...] = (
    RegisteredModelCreated, ModelVersionCreated, ModelVersionTagSet, ModelVersionTagDeleted,
    ModelVersionAliasCreated, ModelVersionAliasDeleted, ModelVersionStageTransitioned,
    StageTransitionRequested, RegistryCommentCreated,
)


class Envelope(BaseModel):
    """A CloudEvents 1.0 event (structured JSON form) carrying one Gatehouse payload."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1)
    source: str = Field(min_length=1, description="URI-reference of the producer")
    type: str = Field(pattern=r"^io\.gatehouse\.[a-z_.]+$")
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    gatehouseschemaversion: str = SCHEMA_VERSION
    traceparent: str | None = Field(
        None, pattern=TRACEPARENT_PATTERN,
        description="W3C Trace Context of the span that emitted it (CloudEvents distributed "
                    "tracing extension): storage queues have no header to carry it")
    data: EventData

    @model_validator(mode="after")
    def _type_matches_data(self) -> Envelope:
        expected = TYPE_PREFIX + self.data.kind
        if self.type != expected:
            raise ValueError(f"type {self.type!r} does not match data kind (expected {expected!r})")
        return self

    @classmethod
    def wrap(cls, data: Payload, *, source: str, dedupe_key: str | None = None,
             time: datetime | None = None, trace_id: str | None = None) -> Envelope:
        """Build an envelope; with `dedupe_key` the id is derived from it, so a retried producer
        emits the same id and consumers can drop the repeat. It starts a trace, or joins
        `trace_id`."""
        event_id = (str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{source}|{dedupe_key}"))
                    if dedupe_key else str(uuid.uuid4()))
        return cls(id=event_id, source=source, type=TYPE_PREFIX + kind_of(type(data)),
                   time=time or datetime.now(UTC), subject=subject_of(data),
                   traceparent=traceparent_for(event_id, trace_id), data=data)

    def derived(self, data: Payload, *, source: str) -> Envelope:
        """An event caused by this one, with an id stable across redeliveries of this one, in
        this one's trace."""
        return Envelope.wrap(data, source=source, dedupe_key=f"{self.id}|{kind_of(type(data))}",
                             trace_id=trace_id_of(self.traceparent))

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        return cls.model_validate_json(text)

    @classmethod
    def from_json_expecting(cls, text: str | bytes, payload_type: PayloadClass) -> Envelope:
        """An envelope from a handler's own queue, which should carry only `payload_type`;
        anything else raises, so the message ends on the poison queue, intact."""
        envelope = cls.from_json(text)
        envelope.data_as(payload_type)
        return envelope

    def data_as(self, payload_type: builtins.type[PayloadT]) -> PayloadT:
        """The payload, typed as the one kind this envelope must carry (ValueError otherwise)."""
        if not isinstance(self.data, payload_type):
            raise ValueError(f"{self.id} is a {self.type}, not {kind_of(payload_type)}")
        return self.data


def subject_of(data: Payload) -> str | None:
    """CloudEvents subject: `<model>/<version>` or `<model>` for model events."""
    model = getattr(data, "model_name", None)
    if not model:
        return getattr(data, "endpoint", None)
    version = getattr(data, "version", None)
    return f"{model}/{version}" if version else model


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of the envelope and of every payload, keyed by file stem."""
    schemas = {"envelope": Envelope.model_json_schema()}
    for cls in EVENT_CLASSES:
        schemas[kind_of(cls)] = TypeAdapter(cls).json_schema()
    return schemas

