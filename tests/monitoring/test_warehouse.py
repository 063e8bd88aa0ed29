"""The Databricks monitor source's summary, computed by SQL on a local Spark SQL session behind
the statement-execution peer, against the same traffic read through the payload log: the same
counts and bins, the same drift figures and the same verdicts."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from shared.monitoring.monitor import MetricState, evaluate_summary, judge
from shared.monitoring.policy import MonitoringPolicy
from shared.monitoring.reference import reference_from_frame
from shared.monitoring.sources import DatabricksInferenceSource, PayloadLogSource, SourceError
from shared.monitoring.summary import Lens, window_bounds
from shared.serving.payload_log import PayloadLog, PayloadRecord
from tests.monitoring.databricks_peer import SERVED_ENTITIES, TOKEN, DatabricksPeer
from tests.monitoring.traffic import START, WINDOW, window_traffic

WAREHOUSE = "4b9b953939869799"
POLICY = MonitoringPolicy(n_bootstrap=50, min_rows=100, min_requests=10, min_labelled_rows=20)
ENTITIES = {version: entity for entity, (_, version) in SERVED_ENTITIES.items()}


@pytest.fixture(scope="module")
def peer(spark):
    server = DatabricksPeer(chunk_rows=50, pending_polls=1, spark=spark).start()
    server.warehouses.add(WAREHOUSE)
    server.create_served_entities()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(peer):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    return WorkspaceClient(config=Config(host=peer.url, token=TOKEN, auth_type="pat",
                                         retry_timeout_seconds=10))


# ---- traffic in both shapes -----------------------------------------------------------------

def _ms(record: PayloadRecord) -> int:
    return round(record.ts * 1000)


def _exact(record: PayloadRecord) -> PayloadRecord:
    """What an inference table keeps of a record: milliseconds, whole-ms latency."""
    return dataclasses.replace(record, ts=_ms(record) / 1000, latency_ms=float(round(
        record.latency_ms)))


def _moment(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def gateway_row(i: int, record: PayloadRecord) -> tuple:
    return (_moment(_ms(record)).date(), f"dbx-{i}", record.request_id, _moment(_ms(record)),
            record.status, 1.0, int(record.latency_ms), record.inputs, record.outputs,
            ENTITIES.get(record.version or "", "entity-unknown"), None, "svc@example.com")


def legacy_row(i: int, record: PayloadRecord) -> tuple:
    return (f"dbx-{i}", record.request_id, _moment(_ms(record)).date(), _ms(record),
            record.status, 1.0, int(record.latency_ms), record.inputs, record.outputs,
            {"model_name": record.model_name, "model_version": record.version})


def _record(window: int, n: int, inputs: object, outputs: object, *, version: str = "2",
            status: int = 200, latency: float = 30.0) -> PayloadRecord:
    return PayloadRecord(ts=window * WINDOW + 1 + n * 0.25, endpoint="fraud-prod",
                         request_id=f"v{version}-{window}-{n}", model_name="fraud",
                         version=version,
                         inputs=inputs if isinstance(inputs, str) else json.dumps(inputs),
                         outputs=outputs if outputs is None or isinstance(outputs, str)
                         else json.dumps(outputs), latency_ms=latency, status=status)


def version_two_traffic(window: int, rows: int, seed: int) -> list[PayloadRecord]:
    """Version 2 (a categorical feature beside a numeric one) in every other request format and
    answer shape the warehouse reads, with failures, unreadable bodies, text where numbers
    belong, missing and absent values, booleans and token counts."""
    rng = np.random.default_rng(seed)
    plans = ["gold", "silver", "bronze", "platinum", True, None]
    records = []
    for n in range(rows):
        amount = None if n % 17 == 0 else round(float(rng.normal(0.3, 1)), 6)
        plan = plans[n % len(plans)]
        score = float(rng.random())
        shape = n % 5
        if shape == 0:  # now and then without the amount at all
            row = {"plan": plan} if n % 4 == 0 else {"amount": amount, "plan": plan}
            inputs, answer = {"dataframe_records": [row]}, score
        elif shape == 1:
            inputs = {"instances": [{"amount": amount, "plan": plan},
                                    {"amount": 1.5, "plan": "gold"}]}
            answer = [{"probability": score}, {"score": 2.0, "proba": 0.25}]
        elif shape == 2:
            inputs = {"dataframe_split": {"columns": ["amount", "plan"], "data": [[amount, plan]]}}
            answer = [1]  # a class, no score
        elif shape == 3:
            text = None if amount is None else str(amount)  # numbers as text read as numbers
            inputs, answer = {"inputs": [{"amount": text, "plan": plan}]}, [[0.5, score]]
        else:
            inputs, answer = {"dataframe_records": [{"amount": amount, "plan": plan}]}, [score]
        predictions = answer if isinstance(answer, list) else [answer]
        outputs = {"predictions": predictions,
                   **({"usage": {"completion_tokens": 1 + n % 7}} if n % 3 == 0 else {})}
        records.append(_record(window, n, inputs, outputs,
                               latency=float(rng.integers(5, 400))))
    records += [_record(window, rows, {"dataframe_records": [{"amount": 1.0}]}, None,
                        status=500),
                _record(window, rows + 1, "not json", {"predictions": [0.5]}),
                _record(window, rows + 2, {"dataframe_records": [{"amount": 1, "plan": "x"}]},
                        {"predictions": [0.1, 0.2]}),
                _record(window, rows + 3, {"unknown": []}, {"usage": {"output_tokens": 12}})]
    if seed % 2:  # text where the reference has numbers: this window's amount PSI is infinite
        records.append(_record(window, rows + 4, {"dataframe_records": [
            {"amount": "lots", "plan": "gold"}]}, {"predictions": [0.4]}))
    return records


@pytest.fixture(scope="module")
def traffic(fitted):
    """Two windows: version 1 (the generated fraud traffic, covariate shift in the second,
    batches of 3 rows) and version 2 (above); labels for most rows of version 1."""
    records, labels = [], {}
    for offset, shift in enumerate([0.0, 0.8]):
        window = START + offset
        found, truth = window_traffic(fitted, window, 240, seed=70 + offset, shift=shift,
                                      error_rate=0.05, batch=3)
        records += found + version_two_traffic(window, 150, seed=offset)
        labels.update(dict(list(truth.items())[: 200]))
    records = sorted((_exact(r) for r in records), key=lambda r: r.ts)
    plan_frame = pd.DataFrame({"amount": np.random.default_rng(3).normal(0, 1, 600),
                               "plan": ["gold", "silver", "bronze"] * 200})
    scores = np.random.default_rng(4).random(600)
    references = {"1": fitted.reference,
                  "2": reference_from_frame("fraud", "2", plan_frame, scores=scores,
                                            labels=(scores > 0.5).astype(int))}
    return records, labels, references


def _plan(references):
    return lambda model, version: Lens(references.get(version), POLICY.decision_threshold)


def _payload_log_summaries(tmp_path, records, labels, references):
    log = PayloadLog(tmp_path / "payloads.sqlite")
    for record in records:
        log.append(record)
    since, until = window_bounds(START, WINDOW)[0], window_bounds(START + 1, WINDOW)[1]
    return PayloadLogSource(log).summaries("fraud-prod", since, until, WINDOW,
                                           _plan(references), labels)


def _close(a, b, rel: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is b
    return all(math.isclose(x, y, rel_tol=rel, abs_tol=1e-12) for x, y in
               zip(np.atleast_1d(a), np.atleast_1d(b), strict=True))


@pytest.mark.parametrize("kind", ["ai_gateway", "legacy"])
def test_the_warehouse_summary_gives_the_payload_logs_figures_and_verdicts(
        kind, peer, client, traffic, tmp_path):
    records, labels, references = traffic
    table = f"main.serving.fraud_{kind}_{uuid.uuid4().hex[:6]}"
    to_row = gateway_row if kind == "ai_gateway" else legacy_row
    peer.create_table(table, kind, [to_row(i, r) for i, r in enumerate(records)])
    source = DatabricksInferenceSource(client, WAREHOUSE, table, "fraud-prod", kind=kind,
                                       poll_seconds=0.01)
    since, until = window_bounds(START, WINDOW)[0], window_bounds(START + 1, WINDOW)[1]
    before, sent = len(peer.statements), len(peer.requests)
    warehouse = source.summaries("fraud-prod", since, until, WINDOW, _plan(references), labels)
    expected = _payload_log_summaries(tmp_path, records, labels, references)

    assert sorted(warehouse) == sorted(expected) == [(START, "1"), (START, "2"),
                                                     (START + 1, "1"), (START + 1, "2")]
    for key, want in expected.items():
        got = warehouse[key]
        assert (got.requests, got.errors, got.token_requests, got.rows, got.scored) == (
            want.requests, want.errors, want.token_requests, want.rows, want.scored), key
        assert got.feature_counts == want.feature_counts, key
        assert got.prediction_counts == want.prediction_counts, key
        assert got.labelled == want.labelled and got.model_name == want.model_name == "fraud"
        for field in ("latency", "token_latency", "confidence_sum", "confidence_spread"):
            assert _close(getattr(got, field), getattr(want, field)), (key, field)
    assert None in warehouse[(START + 1, "2")].feature_counts.values()  # "lots" of amount
    assert warehouse[(START, "1")].labelled and warehouse[(START, "2")].token_requests

    states: dict[str, dict[str, MetricState]] = {"sql": {}, "raw": {}}
    for (window, version), want in sorted(expected.items()):
        results = {path: evaluate_summary(summary, version, window, references[version],
                                          labels, POLICY)
                   for path, summary in (("sql", warehouse[(window, version)]), ("raw", want))}
        sql, raw = results["sql"].figures, results["raw"].figures
        assert sql.keys() == raw.keys() and results["sql"].judged.keys() == \
            results["raw"].judged.keys()
        for name in raw:  # drift figures come from the same counts: equal, not just close
            exact = name.startswith("psi.") or name.endswith("_psi")
            assert sql[name] == raw[name] if exact else _close(sql[name], raw[name]), name
        changes = {}
        for path, result in results.items():
            states[path], changes[path] = judge(states[path], result.judged, POLICY, window)
        verdicts = {path: [(c.metric, c.status, c.since, c.new) for c in found]
                    for path, found in changes.items()}
        assert verdicts["sql"] == verdicts["raw"]
        assert _close([c.value for c in changes["sql"]], [c.value for c in changes["raw"]])
    assert any(c.metric == "feature_psi" for c in changes["raw"])  # the shift was judged

    # Only the summary left the warehouse: a few rows per window, version, feature and bin,
    # and the scores of the labelled rows.
    ran = list(peer.statements.values())[before:]
    summary_rows = sum(len(s["rows"]) for s in ran if ":keys" not in s["statement"])
    labelled_rows = sum(len(s["rows"]) for s in ran if ":keys" in s["statement"])
    assert summary_rows < 200 < len(records)
    assert labelled_rows == sum(len(s.labelled) for s in expected.values())
    _check_statements([b for m, p, b in peer.requests[sent:] if p == "/api/2.0/sql/statements"],
                      references)


def _check_statements(bodies: list[dict], references) -> None:
    """Service figures, one statement per served version, one for the labelled rows; the data's
    and the reference's values travel as parameters, never in the SQL text."""
    assert len(bodies) == 4
    for body in bodies:
        assert body["disposition"] == "INLINE" and body["format"] == "JSON_ARRAY"
        assert "`main`.`serving`" in body["statement"] and "gold" not in body["statement"]
        assert {p["name"] for p in body["parameters"]} >= {"since", "until", "window_ms"}
    [categories] = [p for b in bodies for p in b["parameters"] if p["name"] == "categories_1"]
    assert json.loads(categories["value"]) == references["2"].features["plan"].categories


def test_a_statement_the_warehouse_cannot_run_is_reported(peer, client):
    source = DatabricksInferenceSource(client, WAREHOUSE, "main.serving.missing", "fraud-prod",
                                       poll_seconds=0.01)
    with pytest.raises(SourceError, match="TABLE_OR_VIEW_NOT_FOUND"):
        source.summaries("fraud-prod", 0.0, WINDOW, WINDOW, _plan({}), {})


@pytest.mark.parametrize("body", [
    {"warehouse_id": WAREHOUSE, "statement": "SELECT 1", "row_limit": 1, "colour": "red"},
    {"warehouse_id": WAREHOUSE, "statement": "SELECT :x"},
    {"warehouse_id": WAREHOUSE, "statement": "SELECT :x",
     "parameters": [{"name": "x", "value": "1", "type": "INTEGER"}]},
    {"warehouse_id": WAREHOUSE, "statement": "SELECT :x",
     "parameters": [{"name": "x", "value": "one", "type": "BIGINT"}]},
    {"warehouse_id": WAREHOUSE, "statement": "SELECT 1", "wait_timeout": "90s"},
    {"warehouse_id": WAREHOUSE, "statement": "SELECT 1", "disposition": "EXTERNAL_LINKS"},
    {"warehouse_id": "nope", "statement": "SELECT 1"},
    {"warehouse_id": WAREHOUSE, "statement": "  "},
])
def test_the_peer_refuses_malformed_statements(client, body):
    from databricks.sdk.errors import DatabricksError

    with pytest.raises(DatabricksError):
        client.api_client.do("POST", "/api/2.0/sql/statements", body=body)


def test_the_peer_runs_what_spark_sql_runs(client):
    found = client.api_client.do("POST", "/api/2.0/sql/statements", body={
        "warehouse_id": WAREHOUSE, "wait_timeout": "0s",
        "statement": "SELECT :d * 2 AS twice, percentile(x, array(0.5)) AS median "
                     "FROM VALUES (1D), (4D) AS t(x)",
        "parameters": [{"name": "d", "value": "1.5", "type": "DOUBLE"}]})
    again = found
    while again["status"]["state"] in ("PENDING", "RUNNING"):
        time.sleep(0.05)
        again = client.api_client.do("GET", f"/api/2.0/sql/statements/{found['statement_id']}")
    assert found["status"]["state"] == "PENDING"  # the first answer, as the peer is told
    assert again["status"]["state"] == "SUCCEEDED"
    assert again["result"]["data_array"] == [["3.0", "[2.5]"]]


@pytest.mark.parametrize("kind", ["ai_gateway", "legacy"])
def test_recent_requests_for_a_replay_are_the_latest_successful_bodies(kind, peer, client,
                                                                      traffic):
    """What a rollout replays to a challenger on Databricks, which cannot mirror: the newest
    successful request bodies of the inference table, parsed, failures and non-objects left out."""
    records, _, _ = traffic
    table = f"main.serving.recent_{kind}_{uuid.uuid4().hex[:6]}"
    to_row = gateway_row if kind == "ai_gateway" else legacy_row
    peer.create_table(table, kind, [to_row(i, r) for i, r in enumerate(records)])
    source = DatabricksInferenceSource(client, WAREHOUSE, table, "fraud-prod", kind=kind,
                                       poll_seconds=0.01)
    since, until = records[0].ts, records[-1].ts + 1
    found = source.recent_requests(7, since, until)

    def as_object(body):
        try:
            parsed = json.loads(body)
        except (TypeError, ValueError):
            return None
        return parsed if isinstance(parsed, dict) else None

    served = [r for r in reversed(records) if 200 <= r.status < 300]
    expected = [found for found in map(as_object, (r.inputs for r in served[:7]))
                if found is not None]
    assert found == expected and 0 < len(found) <= 7
    assert source.recent_requests(7, until, until + 60) == []  # nothing served then
