"""The settings model: every type parses, bad values name their setting, secrets stay hidden, and
README.md carries the table rendered from the model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import alerts
from shared.alerts.intake import token_setting
from shared.foundation import runtime
from shared.foundation.settings import Settings, env_name, markdown_table
from shared.foundation.storage import PROJECT_ROOT


def test_each_type_parses_from_text():
    settings = Settings.from_env({
        "GATEHOUSE_WEBHOOK_TOLERANCE_SECONDS": "12.5", "GATEHOUSE_MAX_BODY_BYTES": " 2048 ",
        "GATEHOUSE_OUTBOX_PATH": "/var/gatehouse/out.jsonl", "GATEHOUSE_LOG_FORMAT": "json",
        "GATEHOUSE_POLL_MODELS": " fraud, churn ,", "DATABRICKS_HOST": "  https://adb.example  ",
        "GATEHOUSE_NOTIFY_RETRY_SCALE": "0"})
    assert settings.webhook_tolerance_seconds == 12.5
    assert settings.max_body_bytes == 2048 and isinstance(settings.max_body_bytes, int)
    assert settings.outbox_path == Path("/var/gatehouse/out.jsonl")
    assert settings.log_format == "json" and settings.notify_retry_scale == 0
    assert settings.poll_model_names() == ["fraud", "churn"]
    assert settings.databricks_host == "https://adb.example"


def test_unset_or_blank_means_the_default():
    settings = Settings.from_env({"GATEHOUSE_MAX_BODY_BYTES": "  ", "SLACK_CHANNEL": ""})
    assert settings.max_body_bytes == 1_048_576 and settings.slack_channel is None
    assert settings.outbox_path == PROJECT_ROOT / ".gatehouse" / "outbox.jsonl"
    assert settings.delivery_ttl_seconds == 7 * 24 * 3600 and settings.log_format == "text"


def test_a_mapping_is_the_whole_environment(monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", "https://from-the-process.example")
    assert Settings.from_env({}).databricks_host is None
    assert Settings.from_env().databricks_host == "https://from-the-process.example"


@pytest.mark.parametrize("name,raw,message", [
    ("GATEHOUSE_MAX_BODY_BYTES", "lots", "setting GATEHOUSE_MAX_BODY_BYTES='lots' is not a number"),
    ("GATEHOUSE_MAX_BODY_BYTES", "0", "setting GATEHOUSE_MAX_BODY_BYTES='0' must be at least 1"),
    ("GATEHOUSE_WEBHOOK_TOLERANCE_SECONDS", "-1", "GATEHOUSE_WEBHOOK_TOLERANCE_SECONDS='-1' must "
                                                  "be at least 0"),
    ("GATEHOUSE_DELIVERY_TTL_SECONDS", "a week", "GATEHOUSE_DELIVERY_TTL_SECONDS='a week' is not"),
    ("GATEHOUSE_NOTIFY_RETRY_SCALE", "-0.5", "GATEHOUSE_NOTIFY_RETRY_SCALE='-0.5' must not be "
                                             "negative"),
    ("GATEHOUSE_LOG_FORMAT", "xml", "setting GATEHOUSE_LOG_FORMAT='xml'"),
])
def test_a_bad_value_names_its_setting(name, raw, message):
    with pytest.raises(ValueError) as raised:
        Settings.from_env({name: raw})
    assert message in str(raised.value)


def test_a_bad_value_in_the_environment_fails_the_runtime_settings(monkeypatch):
    monkeypatch.setenv("GATEHOUSE_MAX_BODY_BYTES", "1MB")
    with pytest.raises(ValueError, match="GATEHOUSE_MAX_BODY_BYTES='1MB' is not a number"):
        runtime.settings()


SECRETS = {"GATEHOUSE_MLFLOW_WEBHOOK_SECRET": "mlflow-hook-s3cr3t",
           "DATABRICKS_TOKEN": "dapi-t0ken-value", "SLACK_BOT_TOKEN": "xoxb-b0t-token",
           "GATEHOUSE_ROLLBACK_LINK_SECRET": "link-s3cr3t-0123456789",
           "GATEHOUSE_ALERT_TOKEN_ALERTMANAGER": "alert-t0ken-value",
           "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountKey=k3y-value"}


def test_secrets_are_not_in_the_repr_nor_in_errors():
    settings = Settings.from_env({**SECRETS, "SLACK_CHANNEL": "#models"})
    assert settings.slack_bot_token == SECRETS["SLACK_BOT_TOKEN"]
    for shown in (repr(settings), str(settings)):
        assert "#models" in shown
        assert not [value for value in SECRETS.values() if value in shown]
    assert "secret" in markdown_table().split("`SLACK_BOT_TOKEN`")[1].split("\n")[0]


def test_every_secret_looking_setting_is_declared_secret():
    looks_secret = re.compile(r"(SECRET|TOKEN|ROUTING_KEY|WEBHOOK_URL|PASSWORD)")
    for field in Settings.model_fields.values():
        if looks_secret.search(env_name(field)):
            assert field.repr is False, env_name(field)


def test_every_alert_source_has_its_token_setting():
    names = {env_name(field) for field in Settings.model_fields.values()}
    for source in alerts.SOURCES:
        assert token_setting(source) in names
        settings = Settings.from_env({token_setting(source): f"token-of-{source}"})
        assert settings.alert_token(source) == f"token-of-{source}"


def test_the_readme_carries_the_table_rendered_from_the_model():
    readme = (PROJECT_ROOT / "README.md").read_text()
    found = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert found, "README.md lacks the <!-- settings:begin --> ... <!-- settings:end --> block"
    assert found.group(1) == markdown_table(), (
        "README.md's settings table is stale: paste `python -m shared.foundation.settings "
        "--markdown` between the markers")


def test_the_table_has_a_row_per_setting_and_no_machine_paths():
    table = markdown_table()
    for field in Settings.model_fields.values():
        assert f"| `{env_name(field)}` |" in table
        assert field.description, env_name(field)
    assert str(PROJECT_ROOT) not in table
