"""Inbound formats, checked against what the senders themselves ship and document."""

from __future__ import annotations

import json
import typing
from datetime import UTC, datetime

import pytest
from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent
from mlflow.webhooks import types as mlflow_types

from shared import events
from shared.foundation.http import BodyError
from shared.intake import inbound


def mlflow_body(entity: str, action: str, data: dict) -> bytes:
    """The body exactly as mlflow.webhooks.delivery builds it."""
    return json.dumps({"entity": entity, "action": action,
                       "timestamp": datetime.now(UTC).isoformat(), "data": data}).encode()


def real(example: dict) -> dict:
    """MLflow's example payload for a real model (as sent, the example is a test delivery)."""
    return {**example, "name": "fraud"}


MLFLOW_EVENTS = sorted(mlflow_types.EVENT_TO_PAYLOAD_CLASS.items(),
                       key=lambda item: (item[0][0].value, item[0][1].value))


@pytest.mark.parametrize("key,payload_class", MLFLOW_EVENTS,
                         ids=[f"{e.value}.{a.value}" for (e, a), _ in MLFLOW_EVENTS])
def test_every_mlflow_event_is_accepted_or_ignored(key, payload_class):
    entity, action = key
    result = inbound.parse_mlflow(mlflow_body(entity.value, action.value,
                                              real(payload_class.example())))
    if (entity.value, action.value) in inbound.MLFLOW_PAYLOADS:
        assert isinstance(result, inbound.Accepted)
        assert result.payload.model_name == "fraud"
        test_delivery = inbound.parse_mlflow(mlflow_body(entity.value, action.value,
                                                         payload_class.example()))
        assert isinstance(test_delivery, inbound.Ignored)
        assert "MLflow's test delivery" in test_delivery.reason
    else:
        assert entity.value.startswith(("prompt", "budget"))
        assert isinstance(result, inbound.Ignored)
        assert "not handled" in result.reason


def test_our_mlflow_models_cover_exactly_mlflows_registry_events():
    registry_keys = {(e.value, a.value) for (e, a) in mlflow_types.EVENT_TO_PAYLOAD_CLASS
                     if not e.value.startswith(("prompt", "budget"))}
    assert registry_keys == set(inbound.MLFLOW_PAYLOADS)
    for (entity, action), typed_dict in mlflow_types.EVENT_TO_PAYLOAD_CLASS.items():
        ours = inbound.MLFLOW_PAYLOADS.get((entity.value, action.value))
        if ours is None:
            assert entity.value in inbound.MLFLOW_IGNORED_ENTITIES
            continue
        assert set(ours.model_fields) == set(typing.get_type_hints(typed_dict)), typed_dict


def test_mlflow_model_version_created_maps_every_field():
    example = real(mlflow_types.ModelVersionCreatedPayload.example())
    result = inbound.parse_mlflow(mlflow_body("model_version", "created", example))
    assert result.payload == events.ModelVersionCreated(
        model_name=example["name"], version=example["version"], source=example["source"],
        run_id=example["run_id"], tags=example["tags"], description=example["description"])


@pytest.mark.parametrize("payload_class,expected", [
    (mlflow_types.ModelVersionTagSetPayload, events.ModelVersionTagSet),
    (mlflow_types.ModelVersionTagDeletedPayload, events.ModelVersionTagDeleted),
    (mlflow_types.ModelVersionAliasCreatedPayload, events.ModelVersionAliasCreated),
    (mlflow_types.ModelVersionAliasDeletedPayload, events.ModelVersionAliasDeleted),
    (mlflow_types.RegisteredModelCreatedPayload, events.RegisteredModelCreated),
])
def test_mlflow_events_map_to_internal_types(payload_class, expected):
    event = next(WebhookEvent(e, a) for (e, a), cls in mlflow_types.EVENT_TO_PAYLOAD_CLASS.items()
                 if cls is payload_class)
    example = real(mlflow_types.get_example_payload_for_event(event))
    result = inbound.parse_mlflow(mlflow_body(event.entity.value, event.action.value, example))
    assert type(result.payload) is expected
    for field in ("alias", "version"):
        if field in example:
            assert getattr(result.payload, field) == example[field]
    if expected is events.ModelVersionTagSet:
        assert result.payload.tags == {example["key"]: example["value"]}
    elif "key" in example:
        assert result.payload.key == example["key"]


def test_mlflow_workspace_field_and_future_fields_are_tolerated():
    body = json.loads(mlflow_body("model_version_alias", "deleted",
                                  {"name": "m", "alias": "champion", "added_later": 1}))
    body["workspace"] = "default"
    result = inbound.parse_mlflow(json.dumps(body).encode())
    assert result.payload == events.ModelVersionAliasDeleted(model_name="m", alias="champion")


def test_mlflow_timestamp_becomes_the_event_time():
    body = json.loads(mlflow_body("registered_model", "created",
                                  {"name": "m", "tags": {}, "description": None}))
    body["timestamp"] = "2026-01-02T03:04:05+00:00"
    result = inbound.parse_mlflow(json.dumps(body).encode())
    assert result.occurred_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# Databricks workspace-registry payloads, in the shapes of Databricks' webhook documentation.
def databricks_body(event: str, **fields) -> bytes:
    base = {"event": event, "webhook_id": "c5596721253c4b429368cf6f4341b88a",
            "event_timestamp": 1589859029343, "model_name": "Airline_Delay_SparkML",
            "version": "8", "text": "sample"}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None}).encode()


DATABRICKS_CASES = [
    ("MODEL_VERSION_CREATED", {}, events.ModelVersionCreated, {}),
    ("MODEL_VERSION_TRANSITIONED_STAGE", {"from_stage": "None", "to_stage": "Production"},
     events.ModelVersionStageTransitioned, {"to_stage": "Production", "from_stage": "None"}),
    ("MODEL_VERSION_TRANSITIONED_TO_STAGING", {"from_stage": "None", "to_stage": "Staging"},
     events.ModelVersionStageTransitioned, {"to_stage": "Staging"}),
    ("MODEL_VERSION_TRANSITIONED_TO_PRODUCTION", {"from_stage": "Staging"},
     events.ModelVersionStageTransitioned, {"to_stage": "Production"}),
    ("MODEL_VERSION_TRANSITIONED_TO_ARCHIVED", {"from_stage": "Production"},
     events.ModelVersionStageTransitioned, {"to_stage": "Archived"}),
    ("TRANSITION_REQUEST_CREATED", {"from_stage": "None", "to_stage": "Staging"},
     events.StageTransitionRequested, {"to_stage": "Staging"}),
    ("TRANSITION_REQUEST_TO_STAGING_CREATED", {}, events.StageTransitionRequested,
     {"to_stage": "Staging"}),
    ("TRANSITION_REQUEST_TO_PRODUCTION_CREATED", {"from_stage": "Staging"},
     events.StageTransitionRequested, {"to_stage": "Production"}),
    ("TRANSITION_REQUEST_TO_ARCHIVED_CREATED", {}, events.StageTransitionRequested,
     {"to_stage": "Archived"}),
    ("COMMENT_CREATED", {"comment": "Raw text content of the comment"},
     events.RegistryCommentCreated, {"comment": "Raw text content of the comment"}),
    ("REGISTERED_MODEL_CREATED", {"version": None}, events.RegisteredModelCreated, {}),
    ("MODEL_VERSION_TAG_SET", {"tags": [{"key": "key1", "value": "value1"},
                                        {"key": "key2", "value": "value2"}]},
     events.ModelVersionTagSet, {"tags": {"key1": "value1", "key2": "value2"}}),
]


def test_databricks_cases_cover_the_documented_event_list():
    assert {case[0] for case in DATABRICKS_CASES} == set(inbound.DATABRICKS_EVENTS)


@pytest.mark.parametrize("event,fields,expected,values", DATABRICKS_CASES,
                         ids=[case[0] for case in DATABRICKS_CASES])
def test_every_databricks_event_is_normalised(event, fields, expected, values):
    result = inbound.parse_databricks(databricks_body(event, **fields))
    assert type(result.payload) is expected
    assert result.payload.registry == "databricks"
    assert result.payload.model_name == "Airline_Delay_SparkML"
    for name, value in values.items():
        assert getattr(result.payload, name) == value
    assert result.occurred_at == datetime.fromtimestamp(1589859029.343, tz=UTC)


def test_model_version_created_is_the_same_event_from_either_registry():
    from_mlflow = inbound.parse_mlflow(mlflow_body("model_version", "created", {
        "name": "fraud", "version": "3", "source": "models:/x", "run_id": None, "tags": {},
        "description": None})).payload
    from_databricks = inbound.parse_databricks(databricks_body(
        "MODEL_VERSION_CREATED", model_name="fraud", version="3")).payload
    assert type(from_mlflow) is type(from_databricks) is events.ModelVersionCreated
    assert (from_mlflow.model_name, from_mlflow.version) == \
        (from_databricks.model_name, from_databricks.version)


def _mv(**override) -> dict:
    data = {"name": "m", "version": "1", "source": "s", "run_id": None, "tags": {},
            "description": None}
    data.update(override)
    return data


def _raw(document) -> bytes:
    return json.dumps(document).encode()


NOW = "2026-11-25T12:00:00+00:00"
MALFORMED_MLFLOW = [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[]", "JSON object, not list"),
    (b'"model_version"', "JSON object, not str"),
    (b"42", "JSON object, not int"),
    (b"null", "JSON object, not NoneType"),
    (_raw({"action": "created", "timestamp": NOW, "data": _mv()}), "entity: Field required"),
    (_raw({"entity": "model_version", "timestamp": NOW, "data": _mv()}), "action: Field required"),
    (_raw({"entity": "model_version", "action": "created", "data": _mv()}),
     "timestamp: Field required"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW}),
     "data: Field required"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": "yesterday",
           "data": _mv()}), "timestamp"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW, "data": [1]}),
     "data: Input should be a valid dictionary"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW, "data": "x"}),
     "data: Input should be a valid dictionary"),
    (_raw({"entity": 7, "action": "created", "timestamp": NOW, "data": _mv()}),
     "entity: Input should be a valid string"),
    (_raw({"entity": "", "action": "created", "timestamp": NOW, "data": _mv()}), "entity"),
    (_raw({"entity": "experiment", "action": "created", "timestamp": NOW, "data": _mv()}),
     "unknown MLflow webhook event experiment.created"),
    (_raw({"entity": "model_version", "action": "exploded", "timestamp": NOW, "data": _mv()}),
     "unknown MLflow webhook event model_version.exploded"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW,
           "data": _mv(name=None)}), "data.name"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW,
           "data": _mv(name="")}), "data.name"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW,
           "data": _mv(version=3)}), "data.version: Input should be a valid string"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW,
           "data": _mv(tags=["a"])}), "data.tags"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW,
           "data": _mv(tags={"a": 1})}), "data.tags.a"),
    (_raw({"entity": "model_version", "action": "created", "timestamp": NOW,
           "data": {"name": "m"}}), "data.version: Field required"),
    (_raw({"entity": "model_version_tag", "action": "set", "timestamp": NOW,
           "data": {"name": "m", "version": "1", "key": "k"}}), "data.value: Field required"),
    (_raw({"entity": "model_version_alias", "action": "created", "timestamp": NOW,
           "data": {"name": "m", "version": "1"}}), "data.alias: Field required"),
    (_raw({"entity": "registered_model", "action": "created", "timestamp": NOW,
           "data": {"name": "m", "tags": {}, "description": 5}}), "data.description"),
]

MALFORMED_DATABRICKS = [
    (b"", "empty"),
    (b"<xml/>", "not valid JSON"),
    (b"[1, 2]", "JSON object, not list"),
    (_raw({"webhook_id": "w", "event_timestamp": 1}), "event: Field required"),
    (_raw({"event": "MODEL_VERSION_CREATED", "event_timestamp": 1, "model_name": "m",
           "version": "1"}), "webhook_id: Field required"),
    (_raw({"event": "MODEL_VERSION_CREATED", "webhook_id": "w", "model_name": "m",
           "version": "1"}), "event_timestamp: Field required"),
    (_raw({"event": "MODEL_VERSION_CREATED", "webhook_id": "w", "event_timestamp": "soon",
           "model_name": "m", "version": "1"}), "event_timestamp: Input should be a valid integer"),
    (_raw({"event": "MODEL_VERSION_CREATED", "webhook_id": "w", "event_timestamp": -5,
           "model_name": "m", "version": "1"}), "event_timestamp"),
    (_raw({"event": "MODEL_EXPLODED", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m"}), "unknown Databricks registry event 'MODEL_EXPLODED'"),
    (_raw({"event": "MODEL_VERSION_CREATED", "webhook_id": "w", "event_timestamp": 1,
           "version": "1"}), "model_name: Field required for MODEL_VERSION_CREATED"),
    (_raw({"event": "MODEL_VERSION_CREATED", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m"}), "version: Field required for MODEL_VERSION_CREATED"),
    (_raw({"event": "MODEL_VERSION_TRANSITIONED_STAGE", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m", "version": "1"}), "to_stage: Field required"),
    (_raw({"event": "COMMENT_CREATED", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m", "version": "1"}), "comment: Field required for COMMENT_CREATED"),
    (_raw({"event": "MODEL_VERSION_TAG_SET", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m", "version": "1"}), "tags: Field required"),
    (_raw({"event": "MODEL_VERSION_TAG_SET", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m", "version": "1", "tags": []}), "carries no tag"),
    (_raw({"event": "MODEL_VERSION_TAG_SET", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m", "version": "1", "tags": [{"key": "k"}]}), "tags.0.value"),
    (_raw({"event": "MODEL_VERSION_CREATED", "webhook_id": "w", "event_timestamp": 1,
           "model_name": "m", "version": 8}), "version: Input should be a valid string"),
]


@pytest.mark.parametrize("body,expected", MALFORMED_MLFLOW,
                         ids=[f"mlflow-{i}" for i in range(len(MALFORMED_MLFLOW))])
def test_malformed_mlflow_bodies_say_what_is_wrong(body, expected):
    with pytest.raises(BodyError) as raised:
        inbound.parse_mlflow(body)
    assert expected in raised.value.message


@pytest.mark.parametrize("body,expected", MALFORMED_DATABRICKS,
                         ids=[f"databricks-{i}" for i in range(len(MALFORMED_DATABRICKS))])
def test_malformed_databricks_bodies_say_what_is_wrong(body, expected):
    with pytest.raises(BodyError) as raised:
        inbound.parse_databricks(body)
    assert expected in raised.value.message


def test_there_are_at_least_thirty_malformed_cases():
    assert len(MALFORMED_MLFLOW) + len(MALFORMED_DATABRICKS) >= 30


def test_entity_and_action_enums_are_what_we_think():
    # If MLflow adds an entity, this fails and we decide whether Gatehouse handles it.
    assert {e.value for e in WebhookEntity} == {
        e for e, _ in inbound.MLFLOW_PAYLOADS} | set(inbound.MLFLOW_IGNORED_ENTITIES)
    assert {a.value for a in WebhookAction} >= {a for _, a in inbound.MLFLOW_PAYLOADS}
