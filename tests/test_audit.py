"""The maturity audit: pure figures on hand-made facts, and the same figures off a real registry."""

from __future__ import annotations

import json
import uuid

import pytest

from shared.ops import audit
from shared.ops.audit import DAY_MS, ModelFacts, VersionFacts
from shared.registry import tags

LINEAGE = {"dataset_version": "2026-11", "feature_store_table": "fs.fraud", "team": "risk"}


def version(n, created_days, run=True, run_tags=LINEAGE, version_tags=None, aliases=()):
    return VersionFacts(str(n), created_days * DAY_MS, f"run{n}" if run else None,
                        dict(version_tags or {}), dict(run_tags if run else {}), aliases)


def test_figures_on_hand_made_history():
    facts = ModelFacts("fraud", [
        version(1, 0, version_tags={tags.CHAMPION_SINCE: str(1 * DAY_MS)}),
        version(2, 10, version_tags={tags.CHAMPION_SINCE: str(13 * DAY_MS),
                                     tags.GATE_REPORT_RUN: "r"}, aliases=("champion",)),
        version(3, 30, run_tags={"team": "risk"}, aliases=("challenger",)),
        version(4, 60, run=False),
    ], experiment_runs=12)
    result = audit.audit_model(facts)
    assert result.versions == 4 and result.runs == 3 and result.experiment_runs == 12
    assert result.run_tag_coverage == pytest.approx(2 / 3, abs=1e-4)
    assert result.version_tag_coverage == 0.5            # v1, v2 of 4 (v4 has no run)
    assert result.versions_per_30_days == 2.0            # 4 versions over 60 days
    assert result.median_lead_time_days == 2.0           # median of 1 and 3 days
    assert result.champions == 2 and result.champions_with_gate_report == 0.5
    assert result.serving_without_report == ["3"]


def test_a_short_history_is_not_extrapolated():
    minute = DAY_MS / 1440
    facts = ModelFacts("quick", [VersionFacts(str(n), int(n * 2 * minute), None, {}, {})
                                 for n in range(1, 5)])  # 4 versions in 8 minutes
    assert audit.audit_model(facts).versions_per_30_days == 4.0


def test_empty_model_has_no_figures_rather_than_zeroes():
    result = audit.audit_model(ModelFacts("empty", []))
    assert result.run_tag_coverage is None and result.median_lead_time_days is None
    assert result.versions_per_30_days is None


def test_markdown_json_and_chart(tmp_path):
    summary = audit.summarise([ModelFacts("a", [version(1, 0)]), ModelFacts("b", [])])
    markdown = audit.to_markdown(summary)
    assert "| a | 1 | 1 |" in markdown and "(all models)" in markdown
    assert json.loads(audit.to_json(summary))["overall"]["versions"] == 1
    chart = tmp_path / "audit.png"
    audit.write_chart(summary, str(chart))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_audit_of_a_seeded_real_registry(mlflow_server):
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    name = f"audit-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    experiment = client.create_experiment(f"audit-exp-{uuid.uuid4().hex[:6]}")
    run_tags = [LINEAGE, LINEAGE, {"team": "risk"}]
    for index, tags_for_run in enumerate(run_tags, start=1):
        run = client.create_run(experiment, tags=tags_for_run)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(name, source="s3://bucket/m", run_id=run.info.run_id)
        assert mv.version == str(index)
    client.create_run(experiment)  # a run that never became a version
    v1 = client.get_model_version(name, "1")
    client.set_model_version_tag(name, "1", tags.CHAMPION_SINCE,
                                 str(int(v1.creation_timestamp) + 2 * DAY_MS))
    client.set_model_version_tag(name, "1", tags.GATE_REPORT_RUN, "report-run")
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "3")

    summary = audit.summarise(audit.collect(client, [name]))
    [row] = summary["models"]
    assert row["versions"] == 3 and row["runs"] == 3 and row["experiment_runs"] == 4
    assert row["run_tag_coverage"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["version_tag_coverage"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["median_lead_time_days"] == 2.0
    assert row["champions"] == 1 and row["champions_with_gate_report"] == 1.0
    assert row["serving_without_report"] == ["3"]
    assert summary["overall"]["serving_without_report"] == [f"{name}/v3"]
    assert mlflow  # the client above is mlflow's own
