locals {
  receiver_base_url = "https://${azurerm_function_app_flex_consumption.gatehouse.default_hostname}/api"
}

# Workspace-registry webhook: every registry event goes to Gatehouse's Databricks receiver.
resource "databricks_mlflow_webhook" "gatehouse" {
  description = "Gatehouse: gates, rollout and notifications for ${var.model_name}"
  model_name  = var.model_name
  status      = "ACTIVE"
  events = [
    "MODEL_VERSION_CREATED",
    "MODEL_VERSION_TRANSITIONED_STAGE",
    "TRANSITION_REQUEST_CREATED",
    "COMMENT_CREATED",
    "MODEL_VERSION_TAG_SET",
  ]

  http_url_spec {
    url                     = "${local.receiver_base_url}/registry/databricks"
    secret                  = random_password.shared["databricks-webhook"].result
    enable_ssl_verification = true
  }
}

# The retraining job Gatehouse starts with jobs.run_now(job_parameters=...).
resource "databricks_job" "retraining" {
  name = "gatehouse-retrain-${replace(var.model_name, ".", "-")}"

  parameter {
    name    = "model"
    default = var.model_name
  }
  parameter {
    name    = "reason"
    default = "manual"
  }
  parameter {
    name    = "window"
    default = ""
  }
  parameter {
    name    = "alert_fingerprint"
    default = ""
  }

  environment {
    environment_key = "training"
    spec {
      client       = "2"
      dependencies = ["mlflow>=3.0", "scikit-learn>=1.4"]
    }
  }

  task {
    task_key        = "train"
    environment_key = "training"
    spark_python_task {
      python_file = var.retraining_python_file
      parameters = [
        "--model", "{{job.parameters.model}}",
        "--reason", "{{job.parameters.reason}}",
        "--alert-fingerprint", "{{job.parameters.alert_fingerprint}}",
      ]
    }
  }

  max_concurrent_runs = 1
}

# The serving endpoint Gatehouse ramps canaries on; every request lands in the inference table
# the monitor reads.
resource "databricks_model_serving" "endpoint" {
  name = var.serving_endpoint_name

  config {
    served_entities {
      name                  = "champion"
      entity_name           = var.model_name
      entity_version        = var.champion_version
      workload_size         = "Small"
      scale_to_zero_enabled = true
    }

    traffic_config {
      routes {
        served_model_name  = "champion"
        traffic_percentage = 100
      }
    }
  }

  ai_gateway {
    inference_table_config {
      catalog_name      = var.inference_table_catalog
      schema_name       = var.inference_table_schema
      table_name_prefix = var.serving_endpoint_name
      enabled           = true
    }
  }

  # Gatehouse owns traffic and served entities once the endpoint exists.
  lifecycle {
    ignore_changes = [config]
  }
}
