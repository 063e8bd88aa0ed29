"""Inbound registry webhook formats, each normalised into Gatehouse's typed events.

- MLflow OSS (3.x) webhooks: `{"entity", "action", "timestamp", "data"}`; the `data` shapes are
  the TypedDicts of `mlflow.webhooks.types` (tests check these models against them).
- Databricks workspace-registry webhooks: flat JSON with `event`, `webhook_id`,
  `event_timestamp` (ms) and the documented per-event fields.

Pure: bytes in, a typed payload (or an "ignored" verdict, or a BodyError) out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import events
from shared.foundation import http
from shared.foundation.http import BodyError
from shared.intake import signatures


@dataclass(frozen=True)
class Accepted:
    payload: events.Payload
    occurred_at: datetime


@dataclass(frozen=True)
class Ignored:
    reason: str


def _accepted(payload: events.Payload, occurred_at: datetime) -> Accepted:
    """An event larger than one queue message still travels: the Bus sends it by claim check."""
    return Accepted(payload, occurred_at)


# ---- MLflow OSS ----

class _Lenient(BaseModel):
    # Senders may add fields in later versions; required fields and types are still enforced.
    model_config = ConfigDict(extra="ignore", strict=True, defer_build=True)


class MlflowWebhookBody(_Lenient):
    entity: str = Field(min_length=1)
    action: str = Field(min_length=1)
    timestamp: datetime = Field(strict=False)
    data: dict
    workspace: str | None = None


class MlflowRegisteredModelCreated(_Lenient):
    name: str = Field(min_length=1)
    tags: dict[str, str]
    description: str | None


class MlflowModelVersionCreated(_Lenient):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    source: str
    run_id: str | None
    tags: dict[str, str]
    description: str | None


class MlflowModelVersionTagSet(_Lenient):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    key: str = Field(min_length=1)
    value: str


class MlflowModelVersionTagDeleted(_Lenient):
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    key: str = Field(min_length=1)


class MlflowModelVersionAliasCreated(_Lenient):
    name: str = Field(min_length=1)
    alias: str = Field(min_length=1)
    version: str = Field(min_length=1)


class MlflowModelVersionAliasDeleted(_Lenient):
    name: str = Field(min_length=1)
    alias: str = Field(min_length=1)


MLFLOW_PAYLOADS: dict[tuple[str, str], type[_Lenient]] = {
    ("registered_model", "created"): MlflowRegisteredModelCreated,
    ("model_version", "created"): MlflowModelVersionCreated,
    ("model_version_tag", "set"): MlflowModelVersionTagSet,
    ("model_version_tag", "deleted"): MlflowModelVersionTagDeleted,
    ("model_version_alias", "created"): MlflowModelVersionAliasCreated,
    ("model_version_alias", "deleted"): MlflowModelVersionAliasDeleted,
}
MLFLOW_IGNORED_ENTITIES = {
    "prompt": "prompt registry events are not handled by Gatehouse",
    "prompt_version": "prompt registry events are not handled by Gatehouse",
    "prompt_tag": "prompt registry events are not handled by Gatehouse",
    "prompt_version_tag": "prompt registry events are not handled by Gatehouse",
    "prompt_alias": "prompt registry events are not handled by Gatehouse",
    "budget_policy": "budget policy events are not handled by Gatehouse",
}


def _mlflow_to_event(key: tuple[str, str], data: _Lenient) -> events.Payload:
    if isinstance(data, MlflowRegisteredModelCreated):
        return events.RegisteredModelCreated(model_name=data.name, tags=data.tags,
                                             description=data.description)
    if isinstance(data, MlflowModelVersionCreated):
        return events.ModelVersionCreated(model_name=data.name, version=data.version,
                                          source=data.source, run_id=data.run_id,
                                          tags=data.tags, description=data.description)
    if isinstance(data, MlflowModelVersionTagSet):
        return events.ModelVersionTagSet(model_name=data.name, version=data.version,
                                         tags={data.key: data.value})
    if isinstance(data, MlflowModelVersionTagDeleted):
        return events.ModelVersionTagDeleted(model_name=data.name, version=data.version,
                                             key=data.key)
    if isinstance(data, MlflowModelVersionAliasCreated):
        return events.ModelVersionAliasCreated(model_name=data.name, alias=data.alias,
                                               version=data.version)
    if isinstance(data, MlflowModelVersionAliasDeleted):
        return events.ModelVersionAliasDeleted(model_name=data.name, alias=data.alias)
    raise AssertionError(f"no mapping for {key}")


def is_mlflow_test_delivery(data: dict) -> bool:
    """MLflow's `test_webhook` sends its example payloads, with no header to mark them: model
    `example_model` with the example tag, tag key or alias (mlflow.webhooks.types)."""
    return data.get("name") == "example_model" and (
        data.get("tags") == {"example_key": "example_value"}
        or data.get("key") == "example_key" or data.get("alias") == "example_alias")


def parse_mlflow(body: bytes) -> Accepted | Ignored:
    document = http.json_object(body)
    envelope = http.validate(MlflowWebhookBody, document)
    key = (envelope.entity, envelope.action)
    if envelope.entity in MLFLOW_IGNORED_ENTITIES:
        return Ignored(f"{envelope.entity}.{envelope.action}: "
                       f"{MLFLOW_IGNORED_ENTITIES[envelope.entity]}")
    if is_mlflow_test_delivery(envelope.data):
        return Ignored(f"{envelope.entity}.{envelope.action}: MLflow's test delivery (its example "
                       "payload for model example_model): acknowledged, not acted on")
    model = MLFLOW_PAYLOADS.get(key)
    if model is None:
        known = ", ".join(sorted(f"{e}.{a}" for e, a in MLFLOW_PAYLOADS))
        raise BodyError(f"unknown MLflow webhook event {envelope.entity}.{envelope.action}; "
                           f"known registry events: {known}")
    data = http.validate(model, envelope.data, "data", what="data")
    occurred = envelope.timestamp
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    return _accepted(_mlflow_to_event(key, data), occurred)


# ---- Gatehouse's own forwarder (Databricks model update triggers for Unity Catalog) ----

def parse_forwarded(body: bytes) -> Accepted:
    """A Gatehouse envelope carrying one registry event, as shared/forwarder.py sends it."""
    document = http.json_object(body)
    envelope = http.validate(events.Envelope, document)
    if not isinstance(envelope.data, events.REGISTRY_EVENTS):
        raise BodyError(f"only registry events may be forwarded, not {envelope.type}")
    return _accepted(envelope.data, envelope.time)


# ---- Databricks workspace registry ----

class DatabricksTag(_Lenient):
    key: str = Field(min_length=1)
    value: str


class DatabricksWebhookBody(_Lenient):
    event: str = Field(min_length=1)
    webhook_id: str = Field(min_length=1)
    event_timestamp: int = Field(ge=0, description="milliseconds since the epoch")
    model_name: str | None = Field(default=None, min_length=1)
    version: str | None = Field(default=None, min_length=1)
    from_stage: str | None = None
    to_stage: str | None = Field(default=None, min_length=1)
    comment: str | None = None
    tags: list[DatabricksTag] | None = None
    text: str | None = None


STAGE_BY_EVENT_SUFFIX = {"STAGING": "Staging", "PRODUCTION": "Production", "ARCHIVED": "Archived"}
DATABRICKS_EVENTS = (
    "MODEL_VERSION_CREATED", "MODEL_VERSION_TRANSITIONED_STAGE", "TRANSITION_REQUEST_CREATED",
    "COMMENT_CREATED", "REGISTERED_MODEL_CREATED", "MODEL_VERSION_TAG_SET",
    "MODEL_VERSION_TRANSITIONED_TO_STAGING", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION",
    "MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", "TRANSITION_REQUEST_TO_STAGING_CREATED",
    "TRANSITION_REQUEST_TO_PRODUCTION_CREATED", "TRANSITION_REQUEST_TO_ARCHIVED_CREATED",
)


def _require(body: DatabricksWebhookBody, *fields: str) -> None:
    missing = [name for name in fields if getattr(body, name) is None]
    if missing:
        problems = [f"{name}: Field required for {body.event}" for name in missing]
        raise BodyError("request body is not valid: " + "; ".join(problems), problems)


def _target_stage(body: DatabricksWebhookBody) -> str:
    for suffix, stage in STAGE_BY_EVENT_SUFFIX.items():
        if f"_TO_{suffix}" in body.event:
            return stage
    _require(body, "to_stage")
    return body.to_stage  # type: ignore[return-value]


def parse_databricks(body: bytes, *, now: float | None = None,
                     tolerance_seconds: float | None = None) -> Accepted:
    """A Databricks registry webhook. Given `now` and a tolerance, a body that is otherwise valid
    must also be that fresh: its `event_timestamp` that close to now (signatures.SignatureError
    otherwise: a stale, replayed or future delivery)."""
    document = http.json_object(body)
    hook = http.validate(DatabricksWebhookBody, document)
    if hook.event not in DATABRICKS_EVENTS:
        raise BodyError(f"unknown Databricks registry event {hook.event!r}; known events: "
                           + ", ".join(DATABRICKS_EVENTS))
    _require(hook, "model_name")
    try:
        payload = _databricks_event(hook)
    except ValidationError as exc:  # a field the event needs is present but unusable
        problems = http.validation_problems(exc)
        raise BodyError("request body is not valid: " + "; ".join(problems), problems) from None
    if now is not None and tolerance_seconds is not None:
        signatures.check_freshness("event_timestamp", hook.event_timestamp / 1000, now,
                                   tolerance_seconds)
    return _accepted(payload, _event_time(hook.event_timestamp))


def _databricks_event(hook: DatabricksWebhookBody) -> events.Payload:
    common = {"model_name": hook.model_name, "registry": "databricks"}
    if hook.event == "REGISTERED_MODEL_CREATED":
        return events.RegisteredModelCreated(**common)
    if hook.event == "COMMENT_CREATED":
        _require(hook, "comment")
        return events.RegistryCommentCreated(**common, version=hook.version, comment=hook.comment)
    _require(hook, "version")
    if hook.event == "MODEL_VERSION_CREATED":
        return events.ModelVersionCreated(**common, version=hook.version)
    if hook.event == "MODEL_VERSION_TAG_SET":
        _require(hook, "tags")
        if not hook.tags:
            raise BodyError("request body is not valid: tags: MODEL_VERSION_TAG_SET "
                            "carries no tag", ["tags: List should have at least 1 item"])
        return events.ModelVersionTagSet(**common, version=hook.version,
                                         tags={tag.key: tag.value for tag in hook.tags})
    if hook.event.startswith("MODEL_VERSION_TRANSITIONED"):
        return events.ModelVersionStageTransitioned(
            **common, version=hook.version, from_stage=hook.from_stage,
            to_stage=_target_stage(hook))
    return events.StageTransitionRequested(
        **common, version=hook.version, from_stage=hook.from_stage,
        to_stage=_target_stage(hook), comment=hook.comment)


def _event_time(milliseconds: int) -> datetime:
    try:
        return datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise BodyError(f"event_timestamp {milliseconds} is not a time (milliseconds since "
                        f"the epoch)", ["event_timestamp: not a time"]) from None
