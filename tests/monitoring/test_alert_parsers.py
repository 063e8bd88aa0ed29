"""The alert parsers against the published sample payloads (samples/README.md says where each
comes from), and malformed bodies against clear errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from shared.alerts import SOURCES, parse_alerts
from shared.alerts.common import classify, labels_from_text, severity
from shared.events import AlertKind, Envelope
from shared.foundation.http import BodyError

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def parse(source: str, document) -> list:
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return parse_alerts(source, body).alerts


# ---- Azure Monitor -------------------------------------------------------------------------------

def test_azure_monitor_published_sample():
    [inbound] = parse("azure-monitor", sample("azure_monitor_common_schema_sample"))
    alert = inbound.alert
    assert alert.source == "azure-monitor" and alert.status == "resolved"
    assert alert.severity == "info"  # Sev3 is informational
    assert alert.alert_kind is AlertKind.OTHER  # "Percentage CPU" is not about a model
    assert alert.title == "WCUS-R2-Gen2"
    assert alert.figures == {"Percentage CPU": 7.727, "value": 7.727, "threshold": 25.0}
    assert alert.labels["ResourceId"] == "b1b1b1b1-cccc-dddd-eeee-f2f2f2f2f2f2"
    assert alert.model_name is None and alert.endpoint is None
    assert inbound.started == "2019-03-22T13:58:24.371321+00:00"
    assert inbound.occurred_at.isoformat() == "2019-03-22T14:03:16.224631+00:00"


def test_azure_monitor_fired_and_resolved_share_a_fingerprint():
    resolved = sample("azure_monitor_common_schema_sample")
    fired = copy.deepcopy(resolved)
    fired["data"]["essentials"]["monitorCondition"] = "Fired"
    del fired["data"]["essentials"]["resolvedDateTime"]
    [first], [second] = parse("azure-monitor", fired), parse("azure-monitor", resolved)
    assert first.alert.status == "firing" and second.alert.status == "resolved"
    assert first.alert.fingerprint == second.alert.fingerprint
    assert first.dedupe_key != second.dedupe_key


def test_azure_monitor_log_search_alert_names_model_version_and_endpoint():
    [inbound] = parse("azure-monitor", sample("azure_monitor_log_search_v2_fired"))
    alert = inbound.alert
    assert alert.alert_kind is AlertKind.FEATURE_DRIFT and alert.status == "firing"
    assert (alert.model_name, alert.version, alert.endpoint) == ("fraud", "3", "fraud-prod")
    assert alert.severity == "error"  # Sev1
    assert alert.figures["psi"] == 0.31 and alert.figures["threshold"] == 0.2
    assert alert.labels["Feature"] == "amount" and alert.labels["team"] == "risk-ml"


@pytest.mark.parametrize("sev,expected", [("Sev0", "critical"), ("Sev1", "error"),
                                          ("Sev2", "warning"), ("Sev4", "info")])
def test_azure_severities(sev, expected):
    document = sample("azure_monitor_common_schema_sample")
    document["data"]["essentials"]["severity"] = sev
    assert parse("azure-monitor", document)[0].alert.severity == expected


# ---- Alertmanager --------------------------------------------------------------------------------

def test_alertmanager_published_sample():
    [inbound] = parse("alertmanager", sample("alertmanager_v4_sample"))
    alert = inbound.alert
    assert alert.fingerprint == "alertmanager:1a30ba71cca2921f"
    assert alert.status == "firing" and alert.severity == "critical"
    assert alert.alert_kind is AlertKind.ERROR_RATE  # ProbeFailure
    assert alert.title == "ProbeFailure: BlackBox Probe Failure: https://server.example.org"
    assert alert.labels["job"] == "http_checks"
    assert inbound.started == "2023-02-06T13:08:45.828000+00:00"


def test_alertmanager_sample_without_fingerprint_gets_a_stable_one():
    first = parse("alertmanager", sample("alertmanager_webhook_gist"))[0].alert
    again = parse("alertmanager", sample("alertmanager_webhook_gist"))[0].alert
    assert first.fingerprint == again.fingerprint and first.fingerprint.startswith("alertmanager:")
    assert first.alert_kind is AlertKind.OTHER and first.severity == "warning"


def test_alertmanager_group_becomes_one_alert_each():
    alerts = [i.alert for i in parse("alertmanager", sample("alertmanager_model_group"))]
    assert [(a.alert_kind, a.status) for a in alerts] == [
        (AlertKind.FEATURE_DRIFT, "firing"), (AlertKind.LATENCY, "resolved")]
    drift, latency = alerts
    assert (drift.model_name, drift.version, drift.endpoint) == ("fraud", "3", "fraud-prod")
    assert drift.figures == {"value": 0.31} and drift.labels["feature"] == "amount"
    assert latency.severity == "critical"  # "page"
    assert drift.fingerprint != latency.fingerprint


def test_alertmanager_reports_truncated_alerts():
    document = sample("alertmanager_model_group")
    document["truncatedAlerts"] = 3
    assert parse_alerts("alertmanager", json.dumps(document).encode()).ignored == [
        "3 alert(s) were truncated by Alertmanager's max_alerts"]


# ---- Databricks SQL --------------------------------------------------------------------------

def test_databricks_sql_published_sample():
    [inbound] = parse("databricks-sql", sample("databricks_sql_alert_triggered"))
    alert = inbound.alert
    assert alert.status == "firing" and alert.alert_kind is AlertKind.OTHER
    assert alert.title == 'Alert "Daily revenue" changed status to TRIGGERED'
    assert alert.figures == {"threshold": 100000.0}
    assert alert.labels["column"] == "total_revenue" and alert.labels["alert_id"] == \
        "9876543210987654"
    assert inbound.started == "2026-01-01T00:05:00+00:00"


def test_databricks_sql_alert_about_a_model():
    document = sample("databricks_sql_alert_triggered")
    inner = document["alert"]["alert"]
    inner["name"] = "Fraud calibration"
    inner["custom_description"] = "model=fraud version=4 endpoint=fraud-prod severity=error"
    inner["evaluations"][0]["source"]["name"] = "ece"
    alert = parse("databricks-sql", document)[0].alert
    assert alert.alert_kind is AlertKind.CALIBRATION_DRIFT and alert.severity == "error"
    assert (alert.model_name, alert.version, alert.endpoint) == ("fraud", "4", "fraud-prod")
    inner["evaluations"][0]["state"] = "OK"
    resolved = parse("databricks-sql", document)[0].alert
    assert resolved.status == "resolved" and resolved.fingerprint == alert.fingerprint


@pytest.mark.parametrize("state", ["UNKNOWN", "ERROR"])
def test_databricks_sql_states_without_news_are_acknowledged(state):
    document = sample("databricks_sql_alert_triggered")
    document["alert"]["alert"]["evaluations"][0]["state"] = state
    batch = parse_alerts("databricks-sql", json.dumps(document).encode())
    assert batch.alerts == [] and state in batch.ignored[0]


def test_databricks_sql_legacy_flat_alert():
    legacy = {"event": "alert_state_change", "url_base": "https://example.invalid",
              "alert": {"id": 98, "name": "fraud latency p99 model=fraud", "state": "triggered",
                        "options": {"column": "p99_ms", "op": ">", "value": 250},
                        "last_triggered_at": "2025-01-28T17:29:16.088Z"}}
    alert = parse("databricks-sql", legacy)[0].alert
    assert alert.alert_kind is AlertKind.LATENCY and alert.model_name == "fraud"
    assert alert.figures == {"threshold": 250.0} and alert.status == "firing"


# ---- Gatehouse ---------------------------------------------------------------------------------

GATEHOUSE = {"schema": "gatehouse.monitor.alerts/v1", "alerts": [{
    "alert_kind": "feature_drift", "status": "firing", "title": "PSI 0.31 on amount",
    "model_name": "fraud", "version": "3", "endpoint": "fraud-prod",
    "figures": {"feature_psi": 0.31}, "labels": {"metric": "feature_psi"},
    "starts_at": "2025-06-01T12:00:00Z"}]}


def test_gatehouse_format_derives_a_fingerprint_when_none_is_given():
    [inbound] = parse("gatehouse", GATEHOUSE)
    assert inbound.alert.fingerprint.startswith("gatehouse:")
    assert inbound.alert.severity == "warning"
    envelope = Envelope.wrap(inbound.alert, source="/test")
    assert Envelope.from_json(envelope.to_json()).data == inbound.alert


def test_gatehouse_format_refuses_unknown_fields():
    document = copy.deepcopy(GATEHOUSE)
    document["alerts"][0]["severty"] = "error"
    with pytest.raises(BodyError) as caught:
        parse("gatehouse", document)
    assert "alerts.0.severty: Extra inputs are not permitted" in caught.value.problems


# ---- malformed bodies ----------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("body,expected", [
    (b"", "request body is empty"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, not list"),
    (b"\xff\xfe", "not valid UTF-8"),
])
def test_bodies_that_are_not_json_objects(source, body, expected):
    with pytest.raises(BodyError, match=expected):
        parse_alerts(source, body)


def test_azure_monitor_wrong_schema_and_missing_fields():
    with pytest.raises(BodyError) as caught:
        parse("azure-monitor", {"schemaId": "Microsoft.Insights/activityLogs", "data": {}})
    assert any(p.startswith("schemaId:") for p in caught.value.problems)
    document = sample("azure_monitor_common_schema_sample")
    del document["data"]["essentials"]["alertRule"]
    document["data"]["essentials"]["monitorCondition"] = "Maybe"
    with pytest.raises(BodyError) as caught:
        parse("azure-monitor", document)
    assert "data.essentials.alertRule: Field required" in caught.value.problems
    assert any(p.startswith("data.essentials.monitorCondition:") for p in caught.value.problems)


def test_alertmanager_other_versions_and_empty_groups():
    document = sample("alertmanager_v4_sample")
    document["version"] = "3"
    with pytest.raises(BodyError, match="version '3' is not supported"):
        parse("alertmanager", document)
    document = sample("alertmanager_v4_sample")
    document["alerts"] = []
    with pytest.raises(BodyError) as caught:
        parse("alertmanager", document)
    assert any(p.startswith("alerts:") for p in caught.value.problems)
    document = sample("alertmanager_v4_sample")
    document["alerts"][0]["status"] = "pending"
    with pytest.raises(BodyError, match="alerts.0.status"):
        parse("alertmanager", document)


def test_databricks_sql_wrong_event_and_missing_state():
    with pytest.raises(BodyError, match="event is 'job_run'"):
        parse("databricks-sql", {"event": "job_run", "alert": {}})
    document = sample("databricks_sql_alert_triggered")
    del document["alert"]["alert"]["evaluations"][0]["state"]
    document["alert"]["title"] = "Daily revenue"
    with pytest.raises(BodyError, match="no alert state"):
        parse("databricks-sql", document)
    with pytest.raises(BodyError, match="alert must be an object"):
        parse("databricks-sql", {"event": "alert_state_change", "alert": "x"})


def test_unknown_source_is_refused():
    with pytest.raises(KeyError, match="unknown alert source"):
        parse_alerts("nagios", b"{}")


# ---- classification ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kind", [
    ("ModelFeatureDriftHigh", AlertKind.FEATURE_DRIFT), ("fraud_psi_max", AlertKind.FEATURE_DRIFT),
    ("ECEAboveThreshold", AlertKind.CALIBRATION_DRIFT),
    ("PredictionDistributionShift", AlertKind.PREDICTION_SHIFT),
    ("ModelPerformanceDrift", AlertKind.PERFORMANCE_DRIFT),
    ("AccuracyDrop", AlertKind.PERFORMANCE_DRIFT),
    ("ServingLatencyP99High", AlertKind.LATENCY), ("High5xxRate", AlertKind.ERROR_RATE),
    ("DiskFull", AlertKind.OTHER),
])
def test_kind_from_rule_names(name, kind):
    assert classify({}, name) is kind


def test_explicit_kind_label_wins():
    explicit = classify({"alert_kind": "calibration_drift"}, "LatencyHigh")
    assert explicit is AlertKind.CALIBRATION_DRIFT
    assert classify({"gatehouse_alert_kind": "drift"}, "x") is AlertKind.FEATURE_DRIFT


def test_severity_aliases_and_text_labels():
    assert [severity(s) for s in ("page", "HIGH", "warn", "low", None, "bogus")] == [
        "critical", "error", "warning", "info", "warning", "warning"]
    assert labels_from_text("fraud ECE high (model=fraud, endpoint: fraud-prod)") == {
        "model": "fraud", "endpoint": "fraud-prod"}
