"""The SQL a Databricks SQL warehouse runs to summarise an inference table's windows, so that
only the summary (shared/monitoring/summary.py) leaves the warehouse, never the rows.

Three statements per monitor tick and endpoint, each grouped by window (`ts_ms div window_ms`):
- `service_statement`: per window and served version, requests, errors, exact latency
  quantiles (`percentile`, linear interpolation as numpy's) and ms per output token;
- `rows_statement` (per served version): the request bodies read as input rows
  (`dataframe_split`, `dataframe_records`, `instances`/`inputs` as records) beside the
  response's `predictions`, each row's score, its bin on the reference's edges per feature and
  for the score (`CASE` on the edges; categories by `array_position`), then the bin counts and
  the CBPE sums;
- `labelled_statement` (only when the endpoint has labels): the scores of the rows whose key
  has a label, the keys passed as one JSON parameter.

Portable Spark/Databricks SQL only (from_json, get_json_object, posexplode, zip_with,
percentile, try_cast): the tests run it on a local Spark SQL session. Every value from the data
or the reference (feature names, categories, label keys) is a statement parameter; edges are
numbers written as `CAST('<repr>' AS DOUBLE)`, which reads back the same double.

JSON values are compared as Spark reads them into strings: numbers as written, strings without
quotes, `true`/`false` as booleans (1/0 for numeric features, True/False for categorical ones,
as Python's str() gives). Requests whose `instances`/`inputs` are lists of lists, columnar or
scalars, which the payload-log path also reads, are counted here for the service figures only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from shared.monitoring.reference import FeatureReference, ReferenceDistribution

NUMBER = "'^-?[0-9]+(\\\\.[0-9]+)?([eE][-+]?[0-9]+)?$'"
INTEGER = "'^-?[0-9]+$'"
SCORE_FIELDS = ("probability", "score", "proba", "positive_probability", "p1", "1")
CANNOT_BIN = -1

SOURCES = {
    "ai_gateway": """\
SELECT CAST(unix_millis(t.request_time) AS BIGINT) AS ts_ms,
       coalesce(nullif(t.client_request_id, ''), t.databricks_request_id) AS request_id,
       t.status_code, CAST(coalesce(t.execution_duration_ms, 0) AS DOUBLE) AS latency_ms,
       t.request, t.response, e.entity_name AS model_name,
       CAST(e.entity_version AS STRING) AS version
FROM {table} AS t
LEFT JOIN `system`.`serving`.`served_entities` AS e ON t.served_entity_id = e.served_entity_id
WHERE t.request_time >= :since AND t.request_time < :until""",
    "legacy": """\
SELECT timestamp_ms AS ts_ms,
       coalesce(nullif(client_request_id, ''), databricks_request_id) AS request_id,
       status_code, CAST(coalesce(execution_time_ms, 0) AS DOUBLE) AS latency_ms,
       request, response, request_metadata['model_name'] AS model_name,
       request_metadata['model_version'] AS version
FROM {table}
WHERE timestamp_ms >= :since AND timestamp_ms < :until"""}

# The successful request's output tokens, as payloads.output_tokens reads them: completion_tokens
# unless it is falsy, else output_tokens; a positive integer or nothing.
_TOKENS = """\
CASE WHEN coalesce(get_json_object(response, '$.usage.completion_tokens'), '0')
          IN ('0', '0.0', 'false', '', '[]', '{}')
     THEN get_json_object(response, '$.usage.output_tokens')
     ELSE get_json_object(response, '$.usage.completion_tokens') END"""

REQUESTS = """\
served AS (
{source}
),
requests AS (
  SELECT ts_ms div :window_ms AS window, version, model_name, request_id, latency_ms,
         coalesce(status_code >= 200 AND status_code < 300, false) AS ok, request, response,
         {tokens} AS tokens_text
  FROM served
)"""

SERVICE = """\
WITH {requests},
timed AS (
  SELECT *, CASE WHEN ok AND tokens_text RLIKE {integer} AND try_cast(tokens_text AS BIGINT) > 0
                 THEN latency_ms / try_cast(tokens_text AS BIGINT) END AS token_latency
  FROM requests
)
SELECT window, version, max(model_name) AS model_name, count(*) AS requests,
       count_if(NOT ok) AS errors, percentile(latency_ms, array(0.5, 0.95, 0.99)) AS latency,
       count(token_latency) AS token_requests,
       percentile(token_latency, array(0.5, 0.95, 0.99)) AS token_latency
FROM timed
GROUP BY window, version
ORDER BY window, version"""

# One request's input rows as maps of column -> value text (payloads.input_rows' formats).
_INPUT_ROWS = """\
CASE WHEN get_json_object(request, '$.dataframe_split') IS NOT NULL THEN
       transform(from_json(get_json_object(request, '$.dataframe_split.data'),
                           'array<array<string>>'),
                 r -> map_from_arrays(slice(split_columns, 1, least(size(split_columns), size(r))),
                                      slice(r, 1, least(size(split_columns), size(r)))))
     WHEN get_json_object(request, '$.dataframe_records') IS NOT NULL THEN
       from_json(get_json_object(request, '$.dataframe_records'), 'array<map<string,string>>')
     WHEN get_json_object(request, '$.instances[0]') LIKE '{%' THEN
       from_json(get_json_object(request, '$.instances'), 'array<map<string,string>>')
     WHEN get_json_object(request, '$.instances') IS NULL
          AND get_json_object(request, '$.inputs[0]') LIKE '{%' THEN
       from_json(get_json_object(request, '$.inputs'), 'array<map<string,string>>')
END"""

# One prediction item's score, as payloads._answer reads it: a float in [0, 1], the second of
# two numbers, or a record's first score field holding a number in [0, 1]; integers, booleans
# and strings are classes.
_NUMERIC_ITEM = "p RLIKE {number} AND NOT p RLIKE {integer}"


def _score_expression() -> str:
    def unit(text: str) -> str:
        return (f"CASE WHEN {text} RLIKE {NUMBER} AND try_cast({text} AS DOUBLE) BETWEEN 0 AND 1 "
                f"THEN try_cast({text} AS DOUBLE) END")

    fields = ", ".join(unit(f"get_json_object(p, '$[\\'{name}\\']')") for name in SCORE_FIELDS)
    return f"""\
CASE WHEN {_NUMERIC_ITEM.format(number=NUMBER, integer=INTEGER)}
          AND try_cast(p AS DOUBLE) BETWEEN 0 AND 1 THEN try_cast(p AS DOUBLE)
     WHEN p LIKE '[%' AND size(from_json(p, 'array<string>')) = 2
          AND try_element_at(from_json(p, 'array<string>'), 1) RLIKE {NUMBER}
          AND try_element_at(from_json(p, 'array<string>'), 2) RLIKE {NUMBER}
       THEN try_cast(try_element_at(from_json(p, 'array<string>'), 2) AS DOUBLE)
     WHEN p LIKE '{{%' THEN coalesce({fields})
END"""


def _double(value: float) -> str:
    text = repr(float(value)) if math.isfinite(value) else ("Infinity" if value > 0
                                                             else "-Infinity")
    return f"CAST('{text}' AS DOUBLE)"


def numeric_bin(value: str, edges: list[float], missing: str) -> str:
    """The bin of `value` (a DOUBLE expression): i when e_(i-1) < x <= e_i, as
    FeatureReference.bin_counts; `missing` when the value is missing."""
    steps = " ".join(f"WHEN {value} <= {_double(edge)} THEN {i}" for i, edge in enumerate(edges))
    return f"CASE WHEN {missing} THEN {len(edges) + 1} {steps} ELSE {len(edges)} END"


@dataclass(frozen=True)
class Statement:
    text: str
    parameters: dict[str, tuple[str, str]]  # name -> (type, value)


def _feature_bin(index: int, feature: FeatureReference) -> tuple[str, dict]:
    value = f"try_element_at(features, :feature_{index})"
    if feature.kind == "categorical":
        named = (f"CASE {value} WHEN 'true' THEN 'True' WHEN 'false' THEN 'False' "
                 f"ELSE {value} END")
        position = f"array_position(from_json(:categories_{index}, 'array<string>'), {named})"
        k = len(feature.categories)
        return (f"CASE WHEN {value} IS NULL THEN {k + 1} WHEN {position} = 0 THEN {k} "
                f"ELSE {position} - 1 END", {
                    f"categories_{index}": ("STRING", json.dumps(feature.categories))})
    number = (f"(CASE {value} WHEN 'true' THEN 1D WHEN 'false' THEN 0D "
              f"ELSE try_cast({value} AS DOUBLE) END)")
    binned = numeric_bin(number, feature.edges, f"{value} IS NULL OR isnan({number})")
    return (f"CASE WHEN {value} IS NOT NULL AND {number} IS NULL THEN {CANNOT_BIN} "
            f"ELSE {binned} END", {})


def _requests(kind: str, table: str) -> str:
    return REQUESTS.format(source=SOURCES[kind].format(table=table), tokens=_TOKENS)


def service_statement(kind: str, table: str) -> Statement:
    return Statement(SERVICE.format(requests=_requests(kind, table), integer=INTEGER), {})


def _scored_rows(kind: str, table: str, reference: ReferenceDistribution | None,
                 versions: str) -> tuple[str, list[str], dict[str, tuple[str, str]]]:
    """The CTEs up to `scored_rows` (window, version, key, score, bin_0..bin_n: the
    features', then the score's) of the served `versions` (a SQL condition), the bin columns
    and their parameters."""
    features = list(reference.features.items()) if reference is not None else []
    bins, parameters = [], {}
    for index, (name, feature) in enumerate(features):
        expression, extra = _feature_bin(index, feature)
        bins.append(expression)
        parameters.update({f"feature_{index}": ("STRING", name), **extra})
    if reference is not None and reference.prediction is not None:
        bins.append(f"CASE WHEN score IS NULL THEN NULL ELSE "
                    f"{numeric_bin('score', reference.prediction.edges, 'isnan(score)')} END")
    columns = "".join(f",\n         {b} AS bin_{i}" for i, b in enumerate(bins))
    text = f"""\
WITH {_requests(kind, table)},
parsed AS (
  SELECT window, version, request_id, request, response,
         from_json(get_json_object(request, '$.dataframe_split.columns'), 'array<string>')
           AS split_columns
  FROM requests
  WHERE ok AND {versions}
),
items AS (
  SELECT window, version, request_id, {_INPUT_ROWS} AS inputs,
         from_json(get_json_object(response, '$.predictions'), 'array<string>') AS predictions
  FROM parsed
),
exploded AS (
  SELECT window, version, request_id, size(inputs) AS n_rows,
         posexplode(zip_with(inputs, predictions,
                             (f, p) -> named_struct('features', f, 'prediction', p)))
           AS (position, item)
  FROM items
  WHERE inputs IS NOT NULL AND predictions IS NOT NULL AND size(inputs) = size(predictions)
),
scores AS (
  SELECT window, version, request_id, n_rows, position, item.features AS features, p,
         {_score_expression()} AS score
  FROM (SELECT *, item.prediction AS p FROM exploded)
),
scored_rows AS (
  SELECT window, version,
         CASE WHEN n_rows = 1 THEN request_id ELSE concat(request_id, '/', position) END AS key,
         score{columns}
  FROM scores
)"""
    return text, [f"bin_{i}" for i in range(len(bins))], parameters


def rows_statement(kind: str, table: str, version: str, reference: ReferenceDistribution | None,
                   threshold: float) -> Statement:
    """Per window: (window, -1, -1, rows, scored, sum c, sum c(1-c)), then per feature (in the
    reference's order, the score last) and bin: (window, feature, bin, count, NULL...)."""
    rows, bins, parameters = _scored_rows(kind, table, reference, "version = :version")
    text = f"""{rows},
confident AS (
  SELECT *, CASE WHEN score >= :threshold THEN score ELSE 1 - score END AS c FROM scored_rows
)
SELECT window, -1 AS feature, -1 AS bin, count(*) AS n, count(score) AS scored,
       sum(c) AS confidence_sum, sum(c * (1 - c)) AS confidence_spread
FROM confident
GROUP BY window"""
    if bins:
        text += f"""
UNION ALL
SELECT window, feature, bin, count(*) AS n, CAST(NULL AS BIGINT), CAST(NULL AS DOUBLE),
       CAST(NULL AS DOUBLE)
FROM (SELECT window, posexplode(array({", ".join(bins)})) AS (feature, bin) FROM scored_rows)
WHERE bin IS NOT NULL
GROUP BY window, feature, bin"""
    return Statement(text + "\nORDER BY window, feature, bin",
                     {**parameters, "threshold": ("DOUBLE", repr(float(threshold))),
                      "version": ("STRING", version)})


def labelled_statement(kind: str, table: str, versions: list[str], keys: list[str]
                       ) -> Statement:
    """(window, version, key, score) of the `versions`' scored rows whose key is one of
    `keys`."""
    rows, _, _ = _scored_rows(kind, table, None,
                              "array_contains(from_json(:versions, 'array<string>'), version)")
    text = f"""{rows}
SELECT window, version, key, score
FROM scored_rows
WHERE score IS NOT NULL
  AND key IN (SELECT explode(from_json(:keys, 'array<string>')))
ORDER BY window, version, key, score"""
    return Statement(text, {"versions": ("STRING", json.dumps(sorted(versions))),
                            "keys": ("STRING", json.dumps(sorted(keys)))})


RECENT_REQUESTS = """\
WITH served AS (
{source}
)
SELECT request FROM served
WHERE status_code >= 200 AND status_code < 300 AND request IS NOT NULL
ORDER BY ts_ms DESC
LIMIT {limit}"""


def recent_requests_statement(kind: str, table: str, limit: int) -> Statement:
    """The latest successful request bodies (newest first, at most `limit`): what a rollout
    replays to a challenger on Databricks, which cannot mirror live traffic."""
    return Statement(RECENT_REQUESTS.format(source=SOURCES[kind].format(table=table),
                                            limit=max(int(limit), 0)), {})
