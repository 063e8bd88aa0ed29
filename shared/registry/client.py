"""The MLflow model-registry adapter: versions, aliases, tags, lineage and model loading.

Works with any tracking/registry URI (a local `mlflow server`, Databricks, Unity Catalog).
Writes are idempotent at the registry: a tag or alias is read first and written only when it
differs, so a handler redone after a crash changes nothing that is already in place.
mlflow is imported lazily: this module is safe to import on the webhook path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.foundation import runtime


@dataclass(frozen=True)
class VersionInfo:
    model_name: str
    version: str
    source: str | None
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    stage: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"


class Registry:
    def __init__(self, tracking_uri: str | None = None, registry_uri: str | None = None):
        from mlflow import MlflowClient

        settings = runtime.settings()
        self.tracking_uri = tracking_uri or settings.mlflow_tracking_uri
        self.registry_uri = registry_uri or settings.mlflow_registry_uri
        self.client = MlflowClient(tracking_uri=self.tracking_uri,
                                   registry_uri=self.registry_uri)

    @staticmethod
    def _info(mv) -> VersionInfo:
        return VersionInfo(model_name=mv.name, version=str(mv.version), source=mv.source,
                           run_id=mv.run_id or None, tags=dict(mv.tags or {}),
                           aliases=tuple(getattr(mv, "aliases", None) or ()),
                           stage=getattr(mv, "current_stage", None))

    def version(self, model_name: str, version: str) -> VersionInfo:
        return self._info(self.client.get_model_version(model_name, str(version)))

    def version_by_alias(self, model_name: str, alias: str) -> VersionInfo | None:
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(model_name, alias))
        except MlflowException as exc:
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST",
                                                  "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def set_alias(self, model_name: str, alias: str, version: str) -> bool:
        """Point `alias` at `version` unless it already does; True when it was moved."""
        current = self.version_by_alias(model_name, alias)
        if current is not None and current.version == str(version):
            return False
        self.client.set_registered_model_alias(model_name, alias, str(version))
        return True

    def delete_alias(self, model_name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model_alias(model_name, alias)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise

    def set_version_tags(self, model_name: str, version: str,
                         tags: dict[str, str]) -> dict[str, str]:
        """Write the tags whose value differs from what the version has (a redo writes none);
        returns the tags written."""
        current = self.version(model_name, version).tags
        changed = {key: str(value) for key, value in tags.items()
                   if current.get(key) != str(value)}
        for key, value in changed.items():
            self.client.set_model_version_tag(model_name, str(version), key, value)
        return changed

    def run_tags(self, run_id: str | None) -> dict[str, str]:
        if not run_id:
            return {}
        return dict(self.client.get_run(run_id).data.tags)

    def load_pyfunc(self, model_name: str, version: str):
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")

    def signature(self, model_name: str, version: str):
        """The version's ModelSignature, or None when it was logged without one."""
        from mlflow.models import get_model_info

        return get_model_info(f"models:/{model_name}/{version}").signature
