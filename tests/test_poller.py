"""The registry poller: the same events the webhooks would send, once each."""

from __future__ import annotations

import uuid

import pytest

from shared import events
from shared.foundation.state import StateTable
from shared.intake import poller
from shared.intake.poller import ListedModel, ListedVersion, ModelSnapshot, diff


def listed(aliases=None, versions=()):
    return ListedModel(name="m", aliases=aliases or {},
                       new_versions=[ListedVersion(str(v)) for v in versions])


def test_first_sight_of_a_model_emits_it_and_its_versions_in_order():
    found, after = diff(None, listed({"champion": "1"}, versions=(2, 1)), "unity-catalog")
    kinds = [(type(p).__name__, getattr(p, "version", None)) for p, _ in found]
    assert kinds == [("RegisteredModelCreated", None), ("ModelVersionCreated", "1"),
                     ("ModelVersionCreated", "2"), ("ModelVersionAliasCreated", "1")]
    assert all(p.registry == "unity-catalog" for p, _ in found)
    assert after == ModelSnapshot(2, {"champion": "1"}, 1)


def test_nothing_new_means_no_events_and_same_snapshot():
    before = ModelSnapshot(2, {"champion": "1"}, 1)
    found, after = diff(before, listed({"champion": "1"}, versions=(1, 2)), "mlflow")
    assert found == [] and after == before


def test_alias_move_delete_and_move_back_are_distinct_events():
    before = ModelSnapshot(2, {"champion": "1", "challenger": "2"}, 1)
    moved, snap = diff(before, listed({"champion": "2"}), "mlflow")
    assert {(type(p).__name__, p.alias) for p, _ in moved} == {
        ("ModelVersionAliasCreated", "champion"), ("ModelVersionAliasDeleted", "challenger")}
    back, _ = diff(snap, listed({"champion": "1"}), "mlflow")
    assert back[0][0].version == "1"
    # The same alias pointing at the same version again later is a new event: new key.
    first_key = diff(ModelSnapshot(2, {}, 0), listed({"champion": "1"}), "mlflow")[0][0][1]
    assert back[0][1] != first_key


def test_registry_kind_from_uri():
    assert poller.registry_kind("databricks-uc") == "unity-catalog"
    assert poller.registry_kind("databricks://profile") == "databricks"
    assert poller.registry_kind("http://127.0.0.1:5000") == "mlflow"


@pytest.fixture
def registered(mlflow_server):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    name = f"uc-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source="s3://bucket/model", run_id=None)
    return client, name


def make_store(storage, key):
    return poller.SnapshotStore(StateTable(storage, poller.TABLE), key)


def test_poll_emits_each_change_once_across_restarts(registered, storage):
    client, name = registered
    key = f"test-{uuid.uuid4().hex}"
    published: list[events.Envelope] = []
    first = poller.poll_once(client, make_store(storage, key), published.append, "mlflow", [name])
    assert [e.data.kind for e in first] == ["registered_model.created", "model_version.created",
                                            "model_version.created"]
    assert poller.poll_once(client, make_store(storage, key), published.append, "mlflow",
                            [name]) == []  # a "restarted" poller with a new store object
    client.set_registered_model_alias(name, "champion", "2")
    client.create_model_version(name, source="s3://bucket/model", run_id=None)
    later = poller.poll_once(client, make_store(storage, key), published.append, "mlflow", [name])
    assert [(e.data.kind, e.data.version) for e in later] == [
        ("model_version.created", "3"), ("model_version_alias.created", "2")]
    assert len(published) == 5 and len({e.id for e in published}) == 5


def test_overlapping_polls_and_crashes_repeat_the_same_ids(registered, storage, monkeypatch):
    client, name = registered
    key = f"test-{uuid.uuid4().hex}"
    crashed = make_store(storage, key)
    monkeypatch.setattr(crashed, "save", lambda *a: (_ for _ in ()).throw(RuntimeError("crash")))
    with pytest.raises(RuntimeError):
        poller.poll_once(client, crashed, lambda e: None, "mlflow", [name])
    store_a, store_b = make_store(storage, key), make_store(storage, key)
    ids_a = [e.id for e in poller.poll_once(client, store_a, lambda e: None, "mlflow", [name])]
    # b read nothing saved yet when it started: simulate by polling from a fresh snapshot copy
    monkeypatch.setattr(store_b, "load", lambda: {})
    ids_b = [e.id for e in poller.poll_once(client, store_b, lambda e: None, "mlflow", [name])]
    assert ids_a == ids_b and len(ids_a) == 3
    assert poller.poll_once(client, make_store(storage, key), lambda e: None, "mlflow",
                            [name]) == []
