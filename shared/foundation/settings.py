"""Gatehouse settings: every environment variable the app reads (App Settings in Azure,
local.settings.json locally), declared once with its type, default and meaning.

Secrets are fields with `repr=False`: they never appear in the repr, in logs or in the rendered
documentation. `python -m shared.foundation.settings --markdown` renders the table in README.md.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.foundation.paths import PROJECT_ROOT

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


def _stripped(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _number(minimum: float, *, too_small: str | None = None, integer: bool = False):
    """A number from text; the messages complete "setting NAME='raw' ..."."""
    def parse(raw: Any) -> float | int:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ValueError("is not a number") from None
        if value < minimum:
            raise ValueError(too_small or f"must be at least {minimum:g}")
        return int(value) if integer else value
    return BeforeValidator(parse)


Text = Annotated[str, BeforeValidator(_stripped)]
FilePath = Annotated[Path, BeforeValidator(_stripped)]


def setting(env_name: str, default: Any, description: str, *, secret: bool = False) -> Any:
    return Field(default, validation_alias=env_name, description=description, repr=not secret)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True,
                                      frozen=True)

    # -- storage: queues, tables, state
    storage_connection: Text | None = setting(
        "AzureWebJobsStorage", None,
        "Queues, tables and blobs (large events). `UseDevelopmentStorage=true` means Azurite; "
        "unset locally, the local host starts Azurite.", secret=True)
    storage_account_name: Text | None = setting(
        "AzureWebJobsStorage__accountName", None,
        "Identity-based storage (instead of `AzureWebJobsStorage`): the storage account's name.")
    storage_client_id: Text | None = setting(
        "AzureWebJobsStorage__clientId", None,
        "Client id of the user-assigned managed identity used with `__accountName`.")

    # -- registry webhooks
    mlflow_webhook_secret: str | None = setting(
        "GATEHOUSE_MLFLOW_WEBHOOK_SECRET", None,
        "HMAC secret of the MLflow webhook; when set, unsigned requests are refused.", secret=True)
    databricks_webhook_secret: str | None = setting(
        "GATEHOUSE_DATABRICKS_WEBHOOK_SECRET", None,
        "Shared secret of the Databricks registry webhook.", secret=True)
    forwarder_secret: str | None = setting(
        "GATEHOUSE_FORWARDER_SECRET", None,
        "Secret of the Unity Catalog trigger task (`X-Gatehouse-Signature`).", secret=True)
    webhook_tolerance_seconds: Annotated[float, _number(0)] = setting(
        "GATEHOUSE_WEBHOOK_TOLERANCE_SECONDS", 300.0,
        "Allowed clock skew of signed timestamps, in seconds.")
    max_body_bytes: Annotated[int, _number(1, integer=True)] = setting(
        "GATEHOUSE_MAX_BODY_BYTES", 1_048_576, "Larger request bodies are answered `413`.")
    delivery_ttl_seconds: Annotated[float, _number(1)] = setting(
        "GATEHOUSE_DELIVERY_TTL_SECONDS", 7 * 24 * 3600.0,
        "How long the router remembers an event id, so a retried webhook delivery is dropped, "
        "in seconds.")

    # -- policy and registry
    policy_path: FilePath | None = setting(
        "GATEHOUSE_POLICY_PATH", None,
        "The policy file (TOML or YAML). Unset: `./policy.toml` if present, else built-in "
        "defaults; set to a missing file: an error.")
    mlflow_tracking_uri: Text | None = setting(
        "MLFLOW_TRACKING_URI", None,
        "The MLflow server (or `databricks`). Also turns on logging monitor figures to MLflow.")
    mlflow_registry_uri: Text | None = setting(
        "MLFLOW_REGISTRY_URI", None,
        "The model registry (or `databricks`, `databricks-uc`); default: the tracking URI.")
    mlflow_s3_endpoint_url: Text | None = setting(
        "MLFLOW_S3_ENDPOINT_URL", None,
        "S3-compatible endpoint for `s3://` evaluation data (as MLflow's own setting).")
    mlflow_ui_url: Text | None = setting(
        "MLFLOW_UI_URL", None,
        "MLflow UI address for links in notifications; default: the tracking URI.")
    lifecycle: Text | None = setting(
        "GATEHOUSE_LIFECYCLE", None,
        "`aliases` or `stages`; unset: stages on the Databricks workspace registry, else aliases.")
    poll_registry_uri: Text | None = setting(
        "GATEHOUSE_POLL_REGISTRY_URI", None,
        "Turns on the registry poller for this registry (e.g. `databricks-uc`, an MLflow URL).")
    poll_models: Text = setting(
        "GATEHOUSE_POLL_MODELS", "",
        "Comma-separated models the poller watches; empty: all models.")

    # -- serving, Databricks, monitoring, retraining
    databricks_host: Text | None = setting(
        "DATABRICKS_HOST", None,
        "Databricks workspace: Model Serving, retraining jobs and inference tables.")
    databricks_token: Text | None = setting(
        "DATABRICKS_TOKEN", None,
        "Databricks personal access token; unset: the SDK's other authentication.", secret=True)
    serving_url: Text | None = setting(
        "GATEHOUSE_SERVING_URL", None,
        "The embedded serving endpoint, used when no Databricks workspace is set.")
    payload_log: FilePath | None = setting(
        "GATEHOUSE_PAYLOAD_LOG", None,
        "The embedded serving's payload log, read by the monitor; the embedded server "
        "defaults to `.gatehouse/payloads.sqlite`.")
    spark_remote: Text | None = setting(
        "GATEHOUSE_SPARK_REMOTE", None,
        "Spark Connect for gate runs on a holdout table (`gates.evaluation.table`): `local[2]` "
        "starts a local Spark, `sc://host:15002` reaches a server. Unset with a Databricks "
        "workspace: the gate run submits the summary as a one-time Databricks job.")
    gates_job_script: Text | None = setting(
        "GATEHOUSE_GATES_JOB_SCRIPT", None,
        "The Databricks job's Python file: a workspace or volume path of "
        "`shared/gates/spark_job.py` (the gatehouse package installed with it).")
    gates_job_cluster: Text | None = setting(
        "GATEHOUSE_GATES_JOB_CLUSTER", None,
        "Cluster id the gate summary job runs on; unset: serverless compute.")
    retraining_runs_dir: FilePath = setting(
        "GATEHOUSE_RETRAINING_RUNS_DIR", PROJECT_ROOT / ".gatehouse" / "retraining",
        "Local retraining runs' logs and markers.")

    # -- monitoring alert intake: one token per source
    max_alerts_per_request: Annotated[int, _number(1, integer=True)] = setting(
        "GATEHOUSE_MAX_ALERTS_PER_REQUEST", 100,
        "More alerts in one request are answered `413` (set Alertmanager's `max_alerts` to at "
        "most this).")
    alert_token_azure_monitor: Text | None = setting(
        "GATEHOUSE_ALERT_TOKEN_AZURE_MONITOR", None,
        "Token `azure-monitor` alerts must send (`X-Gatehouse-Alert-Token` or Bearer).",
        secret=True)
    alert_token_alertmanager: Text | None = setting(
        "GATEHOUSE_ALERT_TOKEN_ALERTMANAGER", None,
        "Token `alertmanager` alerts must send.", secret=True)
    alert_token_databricks_sql: Text | None = setting(
        "GATEHOUSE_ALERT_TOKEN_DATABRICKS_SQL", None,
        "Token `databricks-sql` alerts must send.", secret=True)
    alert_token_gatehouse: Text | None = setting(
        "GATEHOUSE_ALERT_TOKEN_GATEHOUSE", None,
        "Token `gatehouse` (own format) alerts must send.", secret=True)

    # -- rollback links
    rollback_link_secret: Text | None = setting(
        "GATEHOUSE_ROLLBACK_LINK_SECRET", None,
        "Signs one-click rollback links (at least 16 characters); unset: links are off.",
        secret=True)
    public_url: Text | None = setting(
        "GATEHOUSE_PUBLIC_URL", None, "The app's public address, for links in notifications.")

    # -- notification channels
    outbox_path: FilePath = setting(
        "GATEHOUSE_OUTBOX_PATH", PROJECT_ROOT / ".gatehouse" / "outbox.jsonl",
        "The outbox file: the notification channel that is always on.")
    slack_bot_token: Text | None = setting(
        "SLACK_BOT_TOKEN", None, "Slack bot token; turns on the Slack channel.", secret=True)
    slack_channel: Text | None = setting(
        "SLACK_CHANNEL", None, "Slack channel to post to; required with `SLACK_BOT_TOKEN`.")
    slack_signing_secret: Text | None = setting(
        "SLACK_SIGNING_SECRET", None,
        "Verifies Slack's interactive requests (the Roll back button).", secret=True)
    slack_api_url: Text | None = setting(
        "SLACK_API_URL", None, "Slack Web API base URL; default: Slack's.")
    teams_webhook_url: Text | None = setting(
        "TEAMS_WEBHOOK_URL", None, "Teams incoming webhook; turns on the Teams channel.",
        secret=True)
    pagerduty_routing_key: Text | None = setting(
        "PAGERDUTY_ROUTING_KEY", None, "PagerDuty Events v2 routing key; turns on PagerDuty.",
        secret=True)
    pagerduty_events_url: Text | None = setting(
        "PAGERDUTY_EVENTS_URL", None, "PagerDuty Events API URL; default: PagerDuty's.")
    pagerduty_ca_bundle: Text | None = setting(
        "PAGERDUTY_CA_BUNDLE", None, "CA bundle to verify the PagerDuty Events API with.")
    notify_retry_scale: Annotated[float, _number(0, too_small="must not be negative")] = setting(
        "GATEHOUSE_NOTIFY_RETRY_SCALE", 1.0,
        "Multiplies the channels' retry back-off (`Retry-After` is honoured as sent).")

    # -- the local host (Azure keeps its own function keys)
    function_key: Text | None = setting(
        "GATEHOUSE_FUNCTION_KEY", None,
        "The local host's function key for `FUNCTION`-level routes (`x-functions-key` header "
        "or `?code=`); unset: generated into `.gatehouse/host-keys.json`.", secret=True)
    master_key: Text | None = setting(
        "GATEHOUSE_MASTER_KEY", None,
        "The local host's master key (also opens every `FUNCTION`-level route); unset: "
        "generated like the function key.", secret=True)

    # -- logs
    log_format: Literal["text", "json"] = setting(
        "GATEHOUSE_LOG_FORMAT", "text",
        "`json`: one JSON object per log line, with the event's id, type, model, version and "
        "endpoint as fields (Terraform sets it in Azure); `text`: plain lines.")

    @model_validator(mode="before")
    @classmethod
    def _blank_means_unset(cls, values: Any) -> Any:
        if not isinstance(values, Mapping):
            return values
        return {key: value for key, value in values.items()
                if not (isinstance(value, str) and not value.strip())}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The settings from `environ` (default: the process environment). A bad value raises
        ValueError naming the setting."""
        try:
            if environ is None:
                return cls()
            # Every setting given explicitly, so none falls back to the process environment.
            return cls(**{env_name(field): environ.get(env_name(field), field.default)
                          for field in cls.model_fields.values()})
        except ValidationError as exc:
            raise ValueError("; ".join(_problem(error) for error in exc.errors())) from None

    def alert_token(self, source: str) -> str | None:
        """The token an alert source must present (`GATEHOUSE_ALERT_TOKEN_<SOURCE>`)."""
        return {"azure-monitor": self.alert_token_azure_monitor,
                "alertmanager": self.alert_token_alertmanager,
                "databricks-sql": self.alert_token_databricks_sql,
                "gatehouse": self.alert_token_gatehouse}.get(source)

    def poll_model_names(self) -> list[str]:
        return [name.strip() for name in self.poll_models.split(",") if name.strip()]


def env_name(field: FieldInfo) -> str:
    return str(field.validation_alias)


def _problem(error: ErrorDetails) -> str:
    name = str(error["loc"][0]) if error["loc"] else "?"
    message = error["msg"].removeprefix("Value error, ")
    field = next((f for f in Settings.model_fields.values() if env_name(f) == name), None)
    shown = "" if field is not None and not field.repr else f"={error['input']!r}"
    return f"setting {name}{shown} {message}"


# -- documentation ------------------------------------------------------------------------------

TYPE_NAMES: dict[object, str] = {str: "text", Path: "path", float: "number", int: "integer"}


def _type_name(field: FieldInfo) -> str:
    if not field.repr:
        return "secret"
    annotation: object = field.annotation  # a class or a typing form (Union, Annotated, Literal)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        return " \\| ".join(f"`{choice}`" for choice in typing.get_args(annotation))
    return TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default_text(value: Any) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, Path):
        return f"`{value.relative_to(PROJECT_ROOT).as_posix()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_table() -> str:
    """The settings table for README.md, rendered from the model."""
    rows = ["| setting | type | default | description |", "|---|---|---|---|"]
    for field in Settings.model_fields.values():
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env_name(field)}` | {_type_name(field)} | "
                    f"{_default_text(field.default)} | {description} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.foundation.settings",
                                     description="Document Gatehouse's settings.")
    parser.add_argument("--markdown", action="store_true",
                        help="print the settings table (Markdown) that README.md carries")
    if parser.parse_args(argv).markdown:
        print(markdown_table(), end="")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
