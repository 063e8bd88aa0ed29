"""Where the monitor reads served traffic: the embedded serving payload log, or a Databricks
inference table through the SQL statement-execution API. Either gives the monitor per window and
served version a WindowSummary (shared/monitoring/summary.py): the payload log's records are
summarised here, the inference table's in the SQL warehouse (shared/monitoring/warehouse.py),
which returns only the summary (INLINE results are capped at 25 MiB; rows never leave it).

Databricks inference tables (`inference_table_kind`):
- `ai_gateway` (AI Gateway-enabled tables): request_time, databricks_request_id,
  client_request_id, status_code, execution_duration_ms, request, response, served_entity_id;
  the served version comes from system.serving.served_entities (entity_name, entity_version);
- `legacy` (payload tables of the first inference-table release): timestamp_ms, status_code,
  execution_time_ms, request, response, request_metadata (MAP with model_name, model_version).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Collection
from datetime import UTC, datetime

from shared.monitoring.summary import (
    Lens,
    Plan,
    Summaries,
    WindowSummary,
    merge,
    summarise_records,
)
from shared.monitoring.warehouse import (
    CANNOT_BIN,
    Statement,
    labelled_statement,
    recent_requests_statement,
    rows_statement,
    service_statement,
)
from shared.serving.payload_log import PayloadLog

_TABLE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


class SourceError(Exception):
    """The traffic could not be read (bad table name, failed or overlong statement)."""


class PayloadLogSource:
    """The embedded server's payload log (GATEHOUSE_PAYLOAD_LOG)."""

    name = "payload-log"

    def __init__(self, log: PayloadLog):
        self.log = log

    def summaries(self, endpoint: str, since: float, until: float, width: float, plan: Plan,
                  label_keys: Collection[str] = ()) -> Summaries:
        records = self.log.records(endpoint=endpoint, since=since, until=until)
        return summarise_records(records, width, plan, label_keys)

    def endpoints(self, since: float, until: float) -> set[str]:
        return self.log.endpoints(since, until)


def quoted_table(template: str, endpoint: str) -> str:
    """`catalog`.`schema`.`table` with {endpoint} filled in; anything else is refused, since the
    name goes into SQL text (values go in as statement parameters)."""
    name = template.replace("{endpoint}", endpoint)
    parts = name.split(".")
    if not 1 <= len(parts) <= 3 or not all(_TABLE_PART.match(p) for p in parts):
        raise SourceError(f"inference table {name!r} is not a catalog.schema.table name")
    return ".".join(f"`{part}`" for part in parts)


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class DatabricksInferenceSource:
    """One endpoint's inference table, summarised by a SQL warehouse (databricks-sdk's statement
    execution): one statement for the service figures, one per served version for the rows'
    bins and sums, and, when the endpoint has labels, one for the scores of labelled rows."""

    name = "databricks-inference-table"

    def __init__(self, client, warehouse_id: str, table_template: str, endpoint: str,
                 kind: str = "ai_gateway", poll_seconds: float = 1.0, timeout: float = 300.0):
        self.client, self.warehouse_id = client, warehouse_id
        self.table = quoted_table(table_template, endpoint)
        self.endpoint, self.kind = endpoint, kind
        self.poll_seconds, self.timeout = poll_seconds, timeout

    def _window_parameters(self, since: float, until: float, width: float) -> dict:
        window_ms = width * 1000
        if window_ms != int(window_ms):
            raise SourceError(f"window of {width}s is not a whole number of milliseconds")
        if self.kind == "legacy":
            bounds = {"since": ("BIGINT", str(int(since * 1000))),
                      "until": ("BIGINT", str(int(until * 1000)))}
        else:
            bounds = {"since": ("TIMESTAMP", _timestamp(since)),
                      "until": ("TIMESTAMP", _timestamp(until))}
        return {**bounds, "window_ms": ("BIGINT", str(int(window_ms)))}

    def _rows(self, statement: Statement, bounds: dict) -> list[list]:
        from databricks.sdk.service.sql import (
            Disposition,
            ExecuteStatementRequestOnWaitTimeout,
            Format,
            StatementParameterListItem,
            StatementState,
        )

        parameters = [StatementParameterListItem(name=name, type=kind, value=value)
                      for name, (kind, value) in {**bounds, **statement.parameters}.items()]
        response = self.client.statement_execution.execute_statement(
            statement=statement.text, warehouse_id=self.warehouse_id, parameters=parameters,
            disposition=Disposition.INLINE, format=Format.JSON_ARRAY, wait_timeout="30s",
            on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CONTINUE)
        deadline = time.monotonic() + self.timeout
        while response.status and response.status.state in (StatementState.PENDING,
                                                            StatementState.RUNNING):
            if time.monotonic() > deadline:
                self.client.statement_execution.cancel_execution(response.statement_id)
                raise SourceError(f"statement on {self.table} ran over {self.timeout:.0f}s")
            time.sleep(self.poll_seconds)
            response = self.client.statement_execution.get_statement(response.statement_id)
        state = response.status.state if response.status else None
        if state != StatementState.SUCCEEDED:
            error = response.status.error.message if response.status and response.status.error \
                else "no detail"
            raise SourceError(f"statement on {self.table} ended {state and state.value}: {error}")
        rows = list((response.result.data_array if response.result else None) or [])
        chunk = response.result
        while chunk is not None and chunk.next_chunk_index is not None:
            chunk = self.client.statement_execution.get_statement_result_chunk_n(
                response.statement_id, chunk.next_chunk_index)
            rows.extend(chunk.data_array or [])
        return rows

    def endpoints(self, since: float, until: float) -> set[str]:
        return {self.endpoint}  # judged every round, traffic or not

    def recent_requests(self, limit: int, since: float, until: float) -> list[dict]:
        """The latest successful request bodies served between `since` and `until`, newest
        first; bodies that are not a JSON object are left out."""
        bounds = {name: value for name, value in self._window_parameters(since, until, 1).items()
                  if name != "window_ms"}
        rows = self._rows(recent_requests_statement(self.kind, self.table, limit), bounds)
        found = []
        for (body,) in rows:
            try:
                parsed = json.loads(body)
            except (TypeError, ValueError):
                continue
            if isinstance(parsed, dict):
                found.append(parsed)
        return found

    def summaries(self, endpoint: str, since: float, until: float, width: float, plan: Plan,
                  label_keys: Collection[str] = ()) -> Summaries:
        if endpoint != self.endpoint:
            return {}
        bounds = self._window_parameters(since, until, width)
        service = [_service(row) for row in self._rows(service_statement(self.kind, self.table),
                                                       bounds)]
        models = {version: model for _, version, model, _ in service if model}
        versions = sorted({version for _, version, _, _ in service if version is not None})
        lenses = {version: plan(models.get(version), version) for version in versions}
        monitored = {version: lens for version, lens in lenses.items() if lens is not None}
        labelled = self._labelled(list(monitored), bounds, label_keys)
        summaries: Summaries = {}
        for version, lens in monitored.items():
            rows = self._version_rows(version, lens, bounds)
            for window, row_version, _, summary in service:
                if row_version == version:
                    summaries[(window, version)] = WindowSummary(
                        **{**vars(summary), **rows.get(window, {}),
                           "labelled": labelled.get((window, version), []),
                           "model_name": models.get(version)})
        return summaries

    def _version_rows(self, version: str, lens: Lens, bounds: dict) -> dict[int, dict]:
        """Per window: rows, scored, the CBPE sums and the bin counts (WindowSummary fields)."""
        reference = lens.reference
        statement = rows_statement(self.kind, self.table, version, reference, lens.threshold)
        sizes = ([len(f.counts) for f in reference.features.values()]
                 + ([len(reference.prediction.counts)] if reference.prediction else [])
                 if reference is not None else [])
        found: dict[int, dict] = {}
        bins: dict[int, list[list[float] | None]] = {}
        for window, feature, bin_, n, scored, confidence, spread in self._rows(statement,
                                                                                 bounds):
            window, feature, bin_ = int(window), int(feature), int(bin_)
            if feature < 0:
                found[window] = {"rows": int(n), "scored": int(scored),
                                 "confidence_sum": float(confidence or 0.0),
                                 "confidence_spread": float(spread or 0.0)}
                continue
            counts = bins.setdefault(window, [[0.0] * size for size in sizes])
            if bin_ == CANNOT_BIN or counts[feature] is None:
                counts[feature] = None
            else:
                counts[feature][bin_] = float(n)  # type: ignore[index]
        for window, counts in bins.items():
            if reference is None:
                continue
            names = list(reference.features)
            found.setdefault(window, {}).update(
                feature_counts=dict(zip(names, counts[:len(names)], strict=True)),
                prediction_counts=counts[len(names)] if reference.prediction else None)
        return found

    def _labelled(self, versions: list[str], bounds: dict, label_keys: Collection[str]
                  ) -> dict[tuple[int, str], list[tuple[str, float]]]:
        """The scores of the rows with labels, by window and version (one statement)."""
        if not label_keys or not versions:
            return {}
        statement = labelled_statement(self.kind, self.table, versions, list(label_keys))
        found: dict[tuple[int, str], list[tuple[str, float]]] = {}
        for window, version, key, score in self._rows(statement, bounds):
            found.setdefault((int(window), version), []).append((key, float(score)))
        return found


def _quantiles(text: str | None):
    values = json.loads(text) if text else None
    return tuple(float(v) for v in values) if values else None


def _service(row: list) -> tuple[int, str | None, str | None, WindowSummary]:
    window, version, model, requests, errors, latency, token_requests, token_latency = row
    return int(window), version, model, WindowSummary(
        requests=int(requests), errors=int(errors), latency=_quantiles(latency),
        token_requests=int(token_requests), token_latency=_quantiles(token_latency))


class Traffic:
    """Every configured source read as one."""

    def __init__(self, sources: list):
        self.sources = sources

    def summaries(self, endpoint: str, since: float, until: float, width: float, plan: Plan,
                  label_keys: Collection[str] = ()) -> Summaries:
        found: Summaries = {}
        for source in self.sources:
            for key, summary in source.summaries(endpoint, since, until, width, plan,
                                                 label_keys).items():
                found[key] = merge(found[key], summary) if key in found else summary
        return found

    def endpoints(self, since: float, until: float) -> set[str]:
        return set().union(*(source.endpoints(since, until) for source in self.sources))
