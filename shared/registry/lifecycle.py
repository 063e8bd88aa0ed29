"""Lifecycle roles (challenger, champion, archived) on aliases or on legacy stages.

OSS MLflow has both aliases and stages; Unity Catalog has aliases only; the Databricks workspace
registry sends webhooks and has stages but refuses aliases. Gatehouse speaks in roles and this
adapter maps them onto what the registry supports:

    role        alias          stage
    challenger  @challenger    Staging
    champion    @champion      Production
    archived    (tag)          Archived

GATEHOUSE_LIFECYCLE=aliases|stages picks one; by default stages are used only for the
Databricks workspace registry (registry URI `databricks`, not `databricks-uc`).
"""

from __future__ import annotations

import time
from typing import Literal

from shared import events
from shared.foundation import runtime
from shared.registry import tags

Role = Literal["challenger", "champion", "archived"]
Mode = Literal["aliases", "stages"]
STAGE_OF_ROLE = {"challenger": "Staging", "champion": "Production", "archived": "Archived"}
ROLE_OF_STAGE = {stage.lower(): role for role, stage in STAGE_OF_ROLE.items()}
ARCHIVED_TAG = tags.ARCHIVED
SINCE_TAG = {"champion": tags.CHAMPION_SINCE, "challenger": tags.CHALLENGER_SINCE}


def mode_for(registry_uri: str | None, setting: str | None = None) -> Mode:
    chosen = (setting or "").strip().lower()
    if chosen in ("aliases", "stages"):
        return chosen  # type: ignore[return-value]
    if chosen:
        raise ValueError(f"GATEHOUSE_LIFECYCLE={setting!r}: use 'aliases' or 'stages'")
    uri = (registry_uri or "").lower()
    return "stages" if uri.startswith("databricks") and not uri.startswith("databricks-uc") \
        else "aliases"


def role_change(payload: events.Payload) -> tuple[str, str, Role] | None:
    """(model, version, role) when a registry event moves a version into a role (pure)."""
    if isinstance(payload, events.ModelVersionAliasCreated) and payload.alias in STAGE_OF_ROLE:
        return payload.model_name, payload.version, payload.alias  # type: ignore[return-value]
    if isinstance(payload, events.ModelVersionStageTransitioned):
        role = ROLE_OF_STAGE.get(payload.to_stage.lower())
        if role:
            return payload.model_name, payload.version, role  # type: ignore[return-value]
    return None


class Lifecycle:
    def __init__(self, registry, mode: Mode):
        self.registry = registry
        self.mode = mode

    @classmethod
    def for_registry(cls, registry) -> Lifecycle:
        return cls(registry, mode_for(registry.registry_uri or registry.tracking_uri,
                                      runtime.settings().lifecycle))

    def holder(self, model: str, role: Role):
        """The version holding a role, or None."""
        if self.mode == "aliases":
            return self.registry.version_by_alias(model, role)
        stage = STAGE_OF_ROLE[role]
        versions = self.registry.client.get_latest_versions(model, stages=[stage])
        return self.registry.version(model, versions[-1].version) if versions else None

    def assign(self, model: str, version: str, role: Role) -> None:
        if role == "archived":
            return self.archive(model, version)
        if self.mode == "aliases":
            self.registry.set_alias(model, role, version)
        else:
            self.registry.client.transition_model_version_stage(
                model, str(version), STAGE_OF_ROLE[role], archive_existing_versions=True)
        since = str(int(time.time() * 1000))
        self.registry.set_version_tags(model, version, {SINCE_TAG[role]: since})

    def clear(self, model: str, role: Role) -> None:
        """Take a role away from whoever holds it (the version keeps existing)."""
        if self.mode == "aliases":
            self.registry.delete_alias(model, role)
            return
        current = self.holder(model, role)
        if current is not None:
            self.registry.client.transition_model_version_stage(model, current.version, "None")

    def archive(self, model: str, version: str) -> None:
        self.registry.set_version_tags(model, version, {ARCHIVED_TAG: "true"})
        if self.mode == "stages":
            self.registry.client.transition_model_version_stage(model, str(version), "Archived")
