"""Roles on aliases or stages, against the real MLflow server (which has both)."""

from __future__ import annotations

import uuid
import warnings

import pytest

from shared import events
from shared.registry.client import Registry
from shared.registry.lifecycle import ARCHIVED_TAG, Lifecycle, mode_for, role_change


@pytest.mark.parametrize("uri,setting,mode", [
    ("databricks", None, "stages"), ("databricks://prof", "", "stages"),
    ("databricks-uc", None, "aliases"), ("http://127.0.0.1:5000", None, "aliases"),
    (None, None, "aliases"), ("databricks", "aliases", "aliases"), ("http://x", "STAGES", "stages"),
])
def test_mode_for(uri, setting, mode):
    assert mode_for(uri, setting) == mode


def test_bad_mode_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="use 'aliases' or 'stages'"):
        mode_for("databricks", "labels")


def test_stage_transitions_and_aliases_are_the_same_lifecycle_events():
    alias = events.ModelVersionAliasCreated(model_name="m", alias="champion", version="3")
    stage = events.ModelVersionStageTransitioned(model_name="m", version="3",
                                                 to_stage="Production", registry="databricks")
    assert role_change(alias) == role_change(stage) == ("m", "3", "champion")
    assert role_change(events.ModelVersionStageTransitioned(
        model_name="m", version="3", to_stage="Staging")) == ("m", "3", "challenger")
    assert role_change(events.ModelVersionAliasCreated(model_name="m", alias="blue",
                                                       version="1")) is None


@pytest.fixture
def model(mlflow_server):
    registry = Registry(tracking_uri=mlflow_server.url)
    name = f"life-{uuid.uuid4().hex[:8]}"
    registry.client.create_registered_model(name)
    for _ in range(3):
        registry.client.create_model_version(name, source="s3://bucket/m", run_id=None)
    return registry, name


@pytest.mark.parametrize("mode", ["aliases", "stages"])
def test_roles_move_and_clear(model, mode):
    registry, name = model
    life = Lifecycle(registry, mode)
    with warnings.catch_warnings():
        # MLflow deprecates stages but still serves them
        warnings.simplefilter("ignore", FutureWarning)
        assert life.holder(name, "champion") is None
        life.assign(name, "1", "champion")
        life.assign(name, "2", "challenger")
        assert life.holder(name, "champion").version == "1"
        assert life.holder(name, "challenger").version == "2"
        life.assign(name, "2", "champion")
        life.archive(name, "1")
        life.clear(name, "challenger")
        assert life.holder(name, "champion").version == "2"
        assert life.holder(name, "challenger") is None
        archived = registry.version(name, "1")
    assert archived.tags[ARCHIVED_TAG] == "true"
    assert int(registry.version(name, "2").tags["gatehouse.champion_since"]) > 1_700_000_000_000
    if mode == "stages":
        assert archived.stage == "Archived"
        assert registry.version(name, "2").stage == "Production"
    else:
        assert registry.version(name, "2").aliases == ("champion",)
