variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "name" {
  description = "Short lowercase prefix for every resource name (3-11 letters or digits)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]{3,11}$", var.name))
    error_message = "name must be 3-11 lowercase letters or digits (it prefixes the storage account name)."
  }
}

variable "location" {
  description = "Azure region with Flex Consumption support."
  type        = string
  default     = "westeurope"
}

variable "databricks_host" {
  description = "Workspace URL, e.g. https://adb-<id>.<n>.azuredatabricks.net"
  type        = string
}

variable "model_name" {
  description = "Registered model Gatehouse governs (workspace registry name, or catalog.schema.model)."
  type        = string
}

variable "serving_endpoint_name" {
  description = "Model Serving endpoint that serves the model."
  type        = string
}

variable "champion_version" {
  description = "Model version the endpoint serves when it is first created."
  type        = string
}

variable "inference_table_catalog" {
  description = "Unity Catalog catalog for the endpoint's inference table."
  type        = string
}

variable "inference_table_schema" {
  description = "Unity Catalog schema for the endpoint's inference table."
  type        = string
}

variable "retraining_python_file" {
  description = "Workspace path of the model's training entrypoint the retraining job runs."
  type        = string
}

variable "channel_secrets" {
  description = "Secrets of the integrations in use, by app setting: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, TEAMS_WEBHOOK_URL, PAGERDUTY_ROUTING_KEY, and GATEHOUSE_ALERT_TOKEN_<SOURCE> for each alert source (AZURE_MONITOR, ALERTMANAGER, DATABRICKS_SQL, GATEHOUSE). Leave one out to keep it off."
  type        = map(string)
  default     = {}
  sensitive   = true

  validation {
    condition = alltrue([for setting in keys(var.channel_secrets) : can(regex(
      "^(SLACK_BOT_TOKEN|SLACK_SIGNING_SECRET|TEAMS_WEBHOOK_URL|PAGERDUTY_ROUTING_KEY|GATEHOUSE_ALERT_TOKEN_[A-Z_]+)$",
    setting))])
    error_message = "channel_secrets keys: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, TEAMS_WEBHOOK_URL, PAGERDUTY_ROUTING_KEY or GATEHOUSE_ALERT_TOKEN_<SOURCE>."
  }
}

variable "slack_channel" {
  description = "Slack channel id for rollout threads."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every Azure resource."
  type        = map(string)
  default     = { app = "gatehouse" }
}
