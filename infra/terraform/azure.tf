data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "gatehouse" {
  name     = "rg-${var.name}-gatehouse"
  location = var.location
  tags     = var.tags
}

resource "azurerm_user_assigned_identity" "app" {
  name                = "id-${var.name}-gatehouse"
  resource_group_name = azurerm_resource_group.gatehouse.name
  location            = azurerm_resource_group.gatehouse.location
  tags                = var.tags
}

# Queues (events between handlers), tables (idempotency records, rollouts, snapshots, failures),
# blobs (claim checks of large events) and the deployment package container. Reached with the managed identity, never with account keys.
resource "azurerm_storage_account" "app" {
  #checkov:skip=CKV_AZURE_59:Flex Consumption without VNet integration reaches storage publicly; access is Entra-only (no keys)
  #checkov:skip=CKV2_AZURE_33:Private endpoints need the VNet integration this baseline leaves to the platform team
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; queues and tables hold event metadata, not training data
  name                            = "st${var.name}gatehouse"
  resource_group_name             = azurerm_resource_group.gatehouse.name
  location                        = azurerm_resource_group.gatehouse.location
  account_tier                    = "Standard"
  account_replication_type        = "GZRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  tags                            = var.tags

  blob_properties {
    delete_retention_policy {
      days = 7
    }
  }

  queue_properties {
    logging {
      delete                = true
      read                  = true
      write                 = true
      version               = "1.0"
      retention_policy_days = 7
    }
  }
}

# Blob reads and writes of the deployment package are logged like the queue traffic.
resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "blob-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.app.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.gatehouse.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:Logged by the diagnostic setting above; storage insights would need account keys, which are off
  name                  = "app-package"
  storage_account_id    = azurerm_storage_account.app.id
  container_access_type = "private"
}

# Claim checks: events too large for a queue message wait in `gatehouse-claims` for their
# consumers (shared/foundation/claims.py). Consumers never delete them; this rule does, long after
# every queue message that names one has expired.
resource "azurerm_storage_management_policy" "claims" {
  storage_account_id = azurerm_storage_account.app.id

  rule {
    name    = "expire-claim-checks"
    enabled = true
    filters {
      prefix_match = ["gatehouse-claims/"]
      blob_types   = ["blockBlob"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = 30
      }
    }
  }
}

resource "azurerm_role_assignment" "storage" {
  for_each = toset([
    "Storage Blob Data Owner",
    "Storage Queue Data Contributor",
    "Storage Table Data Contributor",
  ])
  scope                = azurerm_storage_account.app.id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

resource "azurerm_log_analytics_workspace" "gatehouse" {
  name                = "log-${var.name}-gatehouse"
  resource_group_name = azurerm_resource_group.gatehouse.name
  location            = azurerm_resource_group.gatehouse.location
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}

resource "azurerm_application_insights" "gatehouse" {
  name                = "appi-${var.name}-gatehouse"
  resource_group_name = azurerm_resource_group.gatehouse.name
  location            = azurerm_resource_group.gatehouse.location
  workspace_id        = azurerm_log_analytics_workspace.gatehouse.id
  application_type    = "other"
  tags                = var.tags
}

resource "azurerm_service_plan" "flex" {
  #checkov:skip=CKV_AZURE_225:Flex Consumption (FC1) plans have no zone-redundancy setting
  #checkov:skip=CKV_AZURE_212:Flex Consumption scales per instance; there is no worker count to pin
  name                = "asp-${var.name}-gatehouse"
  resource_group_name = azurerm_resource_group.gatehouse.name
  location            = azurerm_resource_group.gatehouse.location
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = var.tags
}

locals {
  # Secrets are Key Vault references resolved by the app's managed identity; only non-secret
  # values appear here literally.
  key_vault_settings = { for setting, secret in local.app_secrets :
    setting => "@Microsoft.KeyVault(SecretUri=${azurerm_key_vault_secret.app[setting].versionless_id})"
  }
  app_settings = merge(local.key_vault_settings, {
    AzureWebJobsStorage__accountName          = azurerm_storage_account.app.name
    AzureWebJobsStorage__credential           = "managedidentity"
    AzureWebJobsStorage__clientId             = azurerm_user_assigned_identity.app.client_id
    DATABRICKS_HOST                           = var.databricks_host
    ARM_USE_MSI                               = "true"
    ARM_CLIENT_ID                             = azurerm_user_assigned_identity.app.client_id
    MLFLOW_TRACKING_URI                       = "databricks"
    MLFLOW_REGISTRY_URI                       = "databricks"
    GATEHOUSE_LIFECYCLE                       = "stages"
    GATEHOUSE_LOG_FORMAT                      = "json"
    GATEHOUSE_SERVING_ENDPOINT                = var.serving_endpoint_name
    SLACK_CHANNEL                             = var.slack_channel
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"
  })
}

resource "azurerm_function_app_flex_consumption" "gatehouse" {
  name                = "func-${var.name}-gatehouse"
  resource_group_name = azurerm_resource_group.gatehouse.name
  location            = azurerm_resource_group.gatehouse.location
  service_plan_id     = azurerm_service_plan.flex.id
  https_only          = true

  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.app.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id

  runtime_name           = "python"
  runtime_version        = "3.11"
  maximum_instance_count = 40
  instance_memory_in_mb  = 4096

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }
  key_vault_reference_identity_id = azurerm_user_assigned_identity.app.id

  site_config {
    application_insights_connection_string = azurerm_application_insights.gatehouse.connection_string
    minimum_tls_version                    = "1.2"
  }

  app_settings = local.app_settings
  tags         = var.tags

  depends_on = [azurerm_role_assignment.storage, azurerm_role_assignment.key_vault_reader]
}

resource "azurerm_role_assignment" "metrics_publisher" {
  scope                = azurerm_application_insights.gatehouse.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}
