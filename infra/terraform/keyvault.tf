resource "azurerm_key_vault" "gatehouse" {
  #checkov:skip=CKV_AZURE_109:App Service Key Vault references without VNet integration come over the public endpoint
  #checkov:skip=CKV_AZURE_189:Same: public network access stays on until the platform adds private endpoints
  #checkov:skip=CKV2_AZURE_32:Private endpoints need the VNet integration this baseline leaves to the platform team
  name                          = "kv-${var.name}-gatehouse"
  resource_group_name           = azurerm_resource_group.gatehouse.name
  location                      = azurerm_resource_group.gatehouse.location
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "standard"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 30
  public_network_access_enabled = true
  tags                          = var.tags

  network_acls {
    bypass         = "AzureServices"
    default_action = "Allow"
  }
}

resource "azurerm_role_assignment" "key_vault_reader" {
  scope                = azurerm_key_vault.gatehouse.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

resource "azurerm_role_assignment" "key_vault_deployer" {
  scope                = azurerm_key_vault.gatehouse.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# Shared secrets Gatehouse and its senders agree on, generated here and never typed by hand.
resource "random_password" "shared" {
  for_each = toset(["mlflow-webhook", "databricks-webhook", "forwarder", "rollback-link"])
  length   = 48
  special  = false
}

locals {
  app_secrets = merge({
    GATEHOUSE_MLFLOW_WEBHOOK_SECRET     = random_password.shared["mlflow-webhook"].result
    GATEHOUSE_DATABRICKS_WEBHOOK_SECRET = random_password.shared["databricks-webhook"].result
    GATEHOUSE_FORWARDER_SECRET          = random_password.shared["forwarder"].result
    GATEHOUSE_ROLLBACK_LINK_SECRET      = random_password.shared["rollback-link"].result
  }, var.channel_secrets)
}

resource "azurerm_key_vault_secret" "app" {
  for_each        = nonsensitive(toset(keys(local.app_secrets)))
  name            = lower(replace(each.value, "_", "-"))
  value           = local.app_secrets[each.value]
  key_vault_id    = azurerm_key_vault.gatehouse.id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")

  depends_on = [azurerm_role_assignment.key_vault_deployer]

  lifecycle {
    ignore_changes = [expiration_date]
  }
}
