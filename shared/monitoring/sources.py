"""Where the monitor reads served traffic: the embedded serving payload log, or a Databricks
inference table through the SQL statement-execution API.

Both give PayloadRecord rows (shared/serving/payload_log.py), so the monitor reads them alike.

Databricks inference tables (`inference_table_kind`):
- `ai_gateway` (AI Gateway-enabled tables): request_time, databricks_request_id,
  client_request_id, status_code, execution_duration_ms, request, response, served_entity_id;
  the served version comes from system.serving.served_entities (entity_name, entity_version);
- `legacy` (payload tables of the first inference-table release): timestamp_ms, status_code,
  execution_time_ms, request, response, request_metadata (MAP with model_name, model_version).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from shared.serving.payload_log import PayloadLog, PayloadRecord

_TABLE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

AI_GATEWAY_QUERY = """\
SELECT t.databricks_request_id, t.client_request_id,
       CAST(unix_millis(t.request_time) AS BIGINT) AS ts_ms, t.status_code,
       t.execution_duration_ms, t.request, t.response, e.entity_name, e.entity_version
FROM {table} AS t
LEFT JOIN system.serving.served_entities AS e ON t.served_entity_id = e.served_entity_id
WHERE t.request_time >= :since AND t.request_time < :until
ORDER BY t.request_time"""

LEGACY_QUERY = """\
SELECT databricks_request_id, client_request_id, timestamp_ms AS ts_ms, status_code,
       execution_time_ms, request, response, request_metadata['model_name'],
       request_metadata['model_version']
FROM {table}
WHERE timestamp_ms >= :since AND timestamp_ms < :until
ORDER BY timestamp_ms"""


class SourceError(Exception):
    """The traffic could not be read (bad table name, failed or overlong statement)."""


class PayloadLogSource:
    """The embedded server's payload log (GATEHOUSE_PAYLOAD_LOG)."""

    name = "payload-log"

    def __init__(self, log: PayloadLog):
        self.log = log

    def records(self, since: float, until: float, endpoint: str | None = None) -> list:
        return self.log.records(endpoint=endpoint, since=since, until=until)

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
    """One endpoint's inference table, read with databricks-sdk's statement execution."""

    name = "databricks-inference-table"

    def __init__(self, client, warehouse_id: str, table_template: str, endpoint: str,
                 kind: str = "ai_gateway", poll_seconds: float = 1.0, timeout: float = 300.0):
        self.client, self.warehouse_id = client, warehouse_id
        self.table = quoted_table(table_template, endpoint)
        self.endpoint, self.kind = endpoint, kind
        self.poll_seconds, self.timeout = poll_seconds, timeout

    def _statement(self, since: float, until: float):
        from databricks.sdk.service.sql import StatementParameterListItem

        if self.kind == "legacy":
            return LEGACY_QUERY.format(table=self.table), [
                StatementParameterListItem(name="since", value=str(int(since * 1000)),
                                           type="BIGINT"),
                StatementParameterListItem(name="until", value=str(int(until * 1000)),
                                           type="BIGINT")]
        return AI_GATEWAY_QUERY.format(table=self.table), [
            StatementParameterListItem(name="since", value=_timestamp(since), type="TIMESTAMP"),
            StatementParameterListItem(name="until", value=_timestamp(until), type="TIMESTAMP")]

    def _rows(self, since: float, until: float) -> list[list]:
        from databricks.sdk.service.sql import (
            Disposition,
            ExecuteStatementRequestOnWaitTimeout,
            Format,
            StatementState,
        )

        statement, parameters = self._statement(since, until)
        response = self.client.statement_execution.execute_statement(
            statement=statement, warehouse_id=self.warehouse_id, parameters=parameters,
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

    def records(self, since: float, until: float, endpoint: str | None = None) -> list:
        if endpoint not in (None, self.endpoint):
            return []
        records = []
        for (databricks_id, client_id, ts_ms, status, duration, request, response_body,
             model_name, version) in self._rows(since, until):
            records.append(PayloadRecord(
                ts=int(ts_ms) / 1000, endpoint=self.endpoint,
                request_id=client_id or databricks_id, model_name=model_name,
                version=version, inputs=request or "{}", outputs=response_body,
                latency_ms=float(duration or 0), status=int(status or 0)))
        return records


class Traffic:
    """Every configured source read as one."""

    def __init__(self, sources: list):
        self.sources = sources

    def records(self, since: float, until: float, endpoint: str) -> list:
        found = []
        for source in self.sources:
            found.extend(source.records(since, until, endpoint))
        return found

    def endpoints(self, since: float, until: float) -> set[str]:
        return set().union(*(source.endpoints(since, until) for source in self.sources))
