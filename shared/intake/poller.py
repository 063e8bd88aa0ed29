"""Registry polling for registries that send no webhooks (Unity Catalog; any MLflow registry).

Each poll lists the registry, compares it with the snapshot kept per model in the state table,
and emits exactly the events the webhook receivers would: RegisteredModelCreated,
ModelVersionCreated, ModelVersionAliasCreated / Deleted. Event ids are derived from the change
(model, version, alias generation), so a poll repeated after a crash, or two overlapping polls,
emit the same ids and the router drops the repeats; the snapshot is saved with its ETag, so only
one poll moves it forward.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from shared import events
from shared.events import Envelope
from shared.foundation.state import ConcurrencyConflict, Table, safe_row_key

log = logging.getLogger("gatehouse.poller")
TABLE = "gatehouseregistrysnapshots"
SOURCE = "/gatehouse/registry/poller"


@dataclass(frozen=True)
class ModelSnapshot:
    """What the poller last saw of one model: versions up to `max_version`, the aliases."""

    max_version: int = 0
    aliases: dict[str, str] = field(default_factory=dict)
    generation: int = 0  # bumped on every alias change, so a move back is a new event


@dataclass(frozen=True)
class ListedVersion:
    version: str
    source: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class ListedModel:
    name: str
    aliases: dict[str, str]
    new_versions: list[ListedVersion]  # versions above the snapshot's max_version
    tags: dict[str, str] = field(default_factory=dict)
    description: str | None = None


def diff(before: ModelSnapshot | None, now: ListedModel, registry: events.Registry
         ) -> tuple[list[tuple[events.Payload, str]], ModelSnapshot]:
    """The events between a snapshot and a listing (pure), each with its dedupe key,
    and the snapshot to save afterwards."""
    found: list[tuple[events.Payload, str]] = []
    if before is None:
        found.append((events.RegisteredModelCreated(model_name=now.name, registry=registry,
                                                    tags=now.tags, description=now.description),
                      f"{now.name}|created"))
        before = ModelSnapshot()
    max_version = before.max_version
    for listed in sorted(now.new_versions, key=lambda v: int(v.version)):
        if int(listed.version) <= before.max_version:
            continue
        found.append((events.ModelVersionCreated(
            model_name=now.name, registry=registry, version=listed.version, source=listed.source,
            run_id=listed.run_id, tags=listed.tags, description=listed.description),
            f"{now.name}|{listed.version}|created"))
        max_version = max(max_version, int(listed.version))
    generation = before.generation
    alias_changes: list[tuple[events.Payload, str]] = []
    for alias in sorted(set(before.aliases) | set(now.aliases)):
        old, new = before.aliases.get(alias), now.aliases.get(alias)
        if old == new:
            continue
        if new is None:
            alias_changes.append((events.ModelVersionAliasDeleted(
                model_name=now.name, registry=registry, alias=alias), alias))
        else:
            alias_changes.append((events.ModelVersionAliasCreated(
                model_name=now.name, registry=registry, alias=alias, version=new), alias))
    if alias_changes:
        generation += 1
        found += [(payload, f"{now.name}|alias|{alias}|g{generation}")
                  for payload, alias in alias_changes]
    return found, ModelSnapshot(max_version, dict(now.aliases), generation)


def list_registry(client, models: list[str] | None, snapshots: dict[str, ModelSnapshot]
                  ) -> list[ListedModel]:
    """List models (all, or the named ones) with their aliases and versions newer than seen."""
    if models:
        registered = [client.get_registered_model(name) for name in models]
    else:
        registered, token = [], None
        while True:
            page = client.search_registered_models(max_results=200, page_token=token)
            registered += list(page)
            token = page.token
            if not token:
                break
    listed = []
    for model in registered:
        seen = snapshots.get(model.name, ModelSnapshot()).max_version
        versions = [v for v in client.search_model_versions(f"name='{model.name}'")
                    if int(v.version) > seen]
        aliases = model.aliases if isinstance(model.aliases, dict) else {
            a.alias: a.version for a in (model.aliases or [])}
        listed.append(ListedModel(
            name=model.name, aliases={k: str(v) for k, v in aliases.items()},
            tags=dict(model.tags or {}), description=model.description or None,
            new_versions=[ListedVersion(str(v.version), v.source, v.run_id or None,
                                        dict(v.tags or {}), v.description or None)
                          for v in versions]))
    return listed


class SnapshotStore:
    def __init__(self, table: Table, registry_key: str):
        self.table = table
        self.partition = safe_row_key(registry_key)

    def load(self) -> dict[str, tuple[ModelSnapshot, str]]:
        snapshots = {}
        for row in self.table.rows(self.partition):
            values = row.properties
            snapshot = ModelSnapshot(int(values["max_version"]), json.loads(values["aliases"]),
                                     int(values["generation"]))
            snapshots[values["model"]] = (snapshot, row.etag)
        return snapshots

    def save(self, model: str, snapshot: ModelSnapshot, etag: str | None) -> None:
        properties = {"model": model, "max_version": snapshot.max_version,
                      "aliases": json.dumps(snapshot.aliases), "generation": snapshot.generation}
        row = safe_row_key(model)
        if etag is None:
            self.table.insert(self.partition, row, properties)
        else:
            self.table.replace(self.partition, row, properties, etag)


def registry_kind(registry_uri: str | None) -> events.Registry:
    uri = (registry_uri or "").lower()
    if uri.startswith("databricks-uc"):
        return "unity-catalog"
    return "databricks" if uri.startswith("databricks") else "mlflow"


def poll_once(client, store: SnapshotStore, publish, registry: events.Registry,
              models: list[str] | None = None) -> list[Envelope]:
    """One poll: emit every change since the saved snapshots, then move them forward."""
    saved = store.load()
    emitted = []
    for listed in list_registry(client, models, {k: v[0] for k, v in saved.items()}):
        before, etag = saved.get(listed.name, (None, None))
        changes, after = diff(before, listed, registry)
        if not changes:
            continue
        for payload, key in changes:
            envelope = Envelope.wrap(payload, source=SOURCE, dedupe_key=key)
            publish(envelope)
            emitted.append(envelope)
        try:
            store.save(listed.name, after, etag)
        except ConcurrencyConflict:
            log.info("another poll moved %s forward first; its events carry the same ids",
                     listed.name)
    return emitted
