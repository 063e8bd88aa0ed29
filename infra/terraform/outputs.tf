output "function_app_url" {
  description = "Base URL of the Gatehouse API."
  value       = local.receiver_base_url
}

output "mlflow_webhook_url" {
  description = "Where an MLflow OSS server's webhook should point (see `python -m shared.ops.cli webhooks register`)."
  value       = "${local.receiver_base_url}/registry/mlflow"
}

output "forwarder_url" {
  description = "Where the Unity Catalog model-update-trigger task forwards events."
  value       = "${local.receiver_base_url}/registry/forwarded"
}

output "key_vault_name" {
  description = "Key Vault holding the shared secrets and channel tokens."
  value       = azurerm_key_vault.gatehouse.name
}

output "retraining_job_id" {
  description = "Databricks job id to put in the policy's retraining section."
  value       = databricks_job.retraining.id
}
