"""Names of the tags Gatehouse writes on model versions, in one place (the audit reads them)."""

GATE_VERDICT = "gatehouse.gates.verdict"          # "passed" | "failed"
GATE_REPORT_RUN = "gatehouse.gates.report_run_id"  # the MLflow run holding the gate report
ARCHIVED = "gatehouse.archived"                   # "true" once a champion is replaced
CHAMPION_SINCE = "gatehouse.champion_since"       # epoch milliseconds
CHALLENGER_SINCE = "gatehouse.challenger_since"   # epoch milliseconds
DEFAULT_LINEAGE_TAGS = ("dataset_version", "feature_store_table", "team")
