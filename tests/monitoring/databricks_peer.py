"""A local HTTP peer for the Databricks calls the monitor and the retraining handler make,
speaking the documented wire format and rejecting what Databricks rejects.

    POST /api/2.2/jobs/run-now                 job_id, job_parameters, idempotency_token
    GET  /api/2.2/jobs/runs/get?run_id=        the run's status
    POST /api/2.0/sql/statements               statement execution (INLINE, JSON_ARRAY)
    GET  /api/2.0/sql/statements/{id}          poll a statement
    GET  /api/2.0/sql/statements/{id}/result/chunks/{n}

Jobs: a run-now with an idempotency token already used returns that token's run instead of
launching another (the documented guarantee). Statements run on a local Spark SQL session
(`peer.spark`), the same dialect family as Databricks SQL: every `:name` marker must be bound by a
parameter of a known type, bound with Spark's named parameters as that type; a statement Spark
cannot parse or resolve ends FAILED with Spark's message, as a warehouse's would. Tables are
temporary views made by `create_table` from rows in the inference table's schema; the only
rewrite of the statement text maps the workspace's three-part names (`a`.`b`.`c`) to those
views (`a__b__c`). Results are JSON_ARRAY (every value a string, arrays as JSON text) in
chunks of `chunk_rows`, after `pending_polls` PENDING answers.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.databricks_peer_base import ERROR_CODES, LoopbackPeer, Rejected

TOKEN = "dapi-monitoring-peer-token"
RUN_NOW_FIELDS = {"job_id", "job_parameters", "idempotency_token", "dbt_commands", "jar_params",
                  "notebook_params", "only", "performance_target", "pipeline_params",
                  "python_named_params", "python_params", "queue", "spark_submit_params",
                  "sql_params", "duration_target"}
STATEMENT_FIELDS = {"statement", "warehouse_id", "byte_limit", "catalog", "disposition", "format",
                    "on_wait_timeout", "parameters", "query_tags", "row_limit", "schema",
                    "wait_timeout"}
PARAMETER_TYPES = {"STRING", "BIGINT", "INT", "DOUBLE", "DECIMAL", "BOOLEAN", "DATE",
                   "TIMESTAMP"}
MARKER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")
THREE_PART = re.compile(r"`([^`]+)`\.`([^`]+)`\.`([^`]+)`")
SCHEMAS = {
    # AI Gateway-enabled inference table
    "ai_gateway": "request_date DATE, databricks_request_id STRING, client_request_id STRING, "
                  "request_time TIMESTAMP, status_code INT, sampling_fraction DOUBLE, "
                  "execution_duration_ms BIGINT, request STRING, response STRING, "
                  "served_entity_id STRING, logging_error_codes ARRAY<STRING>, requester STRING",
    # legacy (custom model) inference table
    "legacy": "databricks_request_id STRING, client_request_id STRING, date DATE, "
              "timestamp_ms BIGINT, status_code INT, sampling_fraction DOUBLE, "
              "execution_time_ms BIGINT, request STRING, response STRING, "
              "request_metadata MAP<STRING, STRING>",
    "served_entities": "served_entity_id STRING, endpoint_name STRING, "
                       "served_entity_name STRING, entity_type STRING, entity_name STRING, "
                       "entity_version STRING, change_time TIMESTAMP"}


# system.serving.served_entities: served entity id -> (model, version)
SERVED_ENTITIES = {"entity-fraud-1": ("fraud", "1"), "entity-fraud-2": ("fraud", "2"),
                   "entity-fraud-3": ("fraud", "3")}


def view_name(table: str) -> str:
    return "__".join(part.strip("`") for part in table.split("."))


def _bound(item: dict):
    """A parameter's value as its declared type, for Spark's named parameters."""
    value, kind = item.get("value"), item.get("type", "STRING")
    if value is None:
        return None
    try:
        if kind in ("BIGINT", "INT"):
            return int(value)
        if kind == "DOUBLE":
            return float(value)
        if kind == "DECIMAL":
            return Decimal(value)
        if kind == "BOOLEAN":
            return {"true": True, "false": False}[value.lower()]
        if kind == "DATE":
            return date.fromisoformat(value)
        if kind == "TIMESTAMP":  # without a zone: the session's, UTC
            moment = datetime.fromisoformat(value)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, KeyError, InvalidOperation, AttributeError):
        raise Rejected(400, f"parameter {item['name']}: {value!r} is not a {kind}") from None
    return str(value)


def _cell(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value) if isinstance(value, float) else str(value)


class DatabricksPeer(LoopbackPeer):
    def __init__(self, chunk_rows: int = 2, pending_polls: int = 1, spark=None):
        self.chunk_rows, self.pending_polls, self.spark = chunk_rows, pending_polls, spark
        self.jobs: set[int] = set()
        self.runs: dict[int, dict] = {}
        self.tokens: dict[str, int] = {}
        self.warehouses: set[str] = set()
        self.statements: dict[str, dict] = {}
        self.seconds: list[float] = []  # per statement run
        self.requests: list[tuple[str, str, dict | None]] = []
        self.fail_statements = False
        self._next_run = 1000
        self._lock = threading.Lock()
        super().__init__()

    # -- jobs ----------------------------------------------------------------------------------

    def run_now(self, body: dict) -> dict:
        unknown = set(body) - RUN_NOW_FIELDS
        if unknown:
            raise Rejected(400, f"unknown fields: {sorted(unknown)}")
        job_id = body.get("job_id")
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise Rejected(400, "job_id is required and must be an integer")
        if job_id not in self.jobs:
            raise Rejected(400, f"Job {job_id} does not exist.")
        parameters = body.get("job_parameters", {})
        if not isinstance(parameters, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()):
            raise Rejected(400, "job_parameters must map strings to strings")
        token = body.get("idempotency_token")
        if token is not None and (not isinstance(token, str) or not 0 < len(token) <= 64):
            raise Rejected(400, "idempotency_token must be a string of at most 64 characters")
        with self._lock:
            if token is not None and token in self.tokens:
                run_id = self.tokens[token]
            else:
                self._next_run += 1
                run_id = self._next_run
                self.runs[run_id] = {"job_id": job_id, "job_parameters": parameters,
                                     "state": "RUNNING"}
                if token is not None:
                    self.tokens[token] = run_id
        return {"run_id": run_id, "number_in_job": run_id}

    def get_run(self, query: dict) -> dict:
        try:
            run_id = int(query.get("run_id", [""])[0])
        except ValueError:
            raise Rejected(400, "run_id must be an integer") from None
        run = self.runs.get(run_id)
        if run is None:
            raise Rejected(404, f"Run {run_id} does not exist.")
        life_cycle = "RUNNING" if run["state"] == "RUNNING" else "TERMINATED"
        return {"run_id": run_id, "job_id": run["job_id"],
                "status": {"state": run["state"]}, "state": {"life_cycle_state": life_cycle}}

    # -- statements ------------------------------------------------------------------------------

    def execute(self, body: dict) -> dict:
        unknown = set(body) - STATEMENT_FIELDS
        if unknown:
            raise Rejected(400, f"unknown fields: {sorted(unknown)}")
        statement, warehouse = body.get("statement"), body.get("warehouse_id")
        if not isinstance(statement, str) or not statement.strip():
            raise Rejected(400, "statement is required")
        if warehouse not in self.warehouses:
            raise Rejected(404, f"warehouse {warehouse!r} does not exist")
        if body.get("disposition", "INLINE") != "INLINE" or body.get("format",
                                                                     "JSON_ARRAY") != "JSON_ARRAY":
            raise Rejected(400, "this peer serves INLINE JSON_ARRAY results only")
        wait = body.get("wait_timeout", "10s")
        if not re.fullmatch(r"\d+s", wait) or not (wait == "0s" or 5 <= int(wait[:-1]) <= 50):
            raise Rejected(400, "wait_timeout must be 0s or 5s..50s")
        if body.get("on_wait_timeout", "CONTINUE") not in ("CONTINUE", "CANCEL"):
            raise Rejected(400, "on_wait_timeout must be CONTINUE or CANCEL")
        parameters = {}
        for item in body.get("parameters", []):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise Rejected(400, "every parameter needs a name")
            if item.get("type", "STRING") not in PARAMETER_TYPES:
                raise Rejected(400, f"parameter {item['name']}: unknown type {item.get('type')}")
            parameters[item["name"]] = item
        unbound = set(MARKER.findall(statement)) - set(parameters)
        if unbound:
            raise Rejected(400, f"UNBOUND_SQL_PARAMETER: {sorted(unbound)}")
        args = {name: _bound(item) for name, item in parameters.items()}
        statement_id = uuid.uuid4().hex
        record: dict = {"polls": 0, "state": "RUNNING", "rows": [], "done": threading.Event(),
                        "statement": statement}
        with self._lock:
            self.statements[statement_id] = record

        def run() -> None:
            record.update(self._run(statement, args))
            record["done"].set()

        threading.Thread(target=run, daemon=True).start()
        record["done"].wait(int(wait[:-1]))  # as a warehouse: answer within wait_timeout
        return self._statement(statement_id)

    def _run(self, statement: str, args: dict) -> dict:
        """The statement run on the local Spark session: SUCCEEDED with its rows, or FAILED with
        Spark's message."""
        from pyspark.errors import PySparkException

        if self.fail_statements:
            return {"state": "FAILED", "rows": [], "error": "[TABLE_OR_VIEW_NOT_FOUND] injected"}
        text = THREE_PART.sub(lambda m: f"`{m[1]}__{m[2]}__{m[3]}`", statement)
        started = time.perf_counter()
        try:
            rows = self.spark.sql(text, args=args).collect()
            self.seconds.append(time.perf_counter() - started)
        except PySparkException as exc:
            return {"state": "FAILED", "rows": [], "error": str(exc).splitlines()[0]}
        return {"state": "SUCCEEDED", "rows": [[_cell(v) for v in row] for row in rows]}

    def create_served_entities(self) -> None:
        moment = datetime(2017, 1, 1, tzinfo=UTC)
        self.create_table("system.serving.served_entities", "served_entities", [
            (entity, "fraud-prod", f"{model}-{version}", "CUSTOM_MODEL", model, version, moment)
            for entity, (model, version) in SERVED_ENTITIES.items()])

    def create_table(self, table: str, kind: str, rows: list[tuple]) -> None:
        """`table` (catalog.schema.table) holding `rows` in the `kind` schema (SCHEMAS)."""
        frame = self.spark.createDataFrame(rows, SCHEMAS[kind]).cache()
        frame.count()  # held by the JVM from now on: no Python worker per statement
        frame.createOrReplaceTempView(view_name(table))

    def _chunk(self, statement_id: str, index: int) -> dict:
        rows = self.statements[statement_id]["rows"]
        size = self.chunk_rows
        chunk = {"chunk_index": index, "row_offset": index * size,
                 "row_count": len(rows[index * size:(index + 1) * size]),
                 "data_array": rows[index * size:(index + 1) * size]}
        if (index + 1) * size < len(rows):
            chunk["next_chunk_index"] = index + 1
            chunk["next_chunk_internal_link"] = (f"/api/2.0/sql/statements/{statement_id}"
                                                 f"/result/chunks/{index + 1}")
        return chunk

    def _statement(self, statement_id: str) -> dict:
        record = self.statements.get(statement_id)
        if record is None:
            raise Rejected(404, f"statement {statement_id} does not exist")
        with self._lock:
            record["polls"] += 1
            pending = record["polls"] <= self.pending_polls
        if pending or record["state"] == "RUNNING":
            state = "PENDING" if pending else "RUNNING"
            return {"statement_id": statement_id, "status": {"state": state}}
        if record["state"] == "FAILED":
            return {"statement_id": statement_id,
                    "status": {"state": "FAILED", "error": {"error_code": "BAD_REQUEST",
                                                            "message": record["error"]}}}
        rows = record["rows"]
        chunks = max(1, -(-len(rows) // self.chunk_rows))
        return {"statement_id": statement_id, "status": {"state": "SUCCEEDED"},
                "manifest": {"format": "JSON_ARRAY", "total_chunk_count": chunks,
                             "total_row_count": len(rows), "truncated": False},
                "result": self._chunk(statement_id, 0)}

    # -- HTTP ------------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict, body: dict | None) -> dict:
        if method == "POST" and path == "/api/2.2/jobs/run-now":
            return self.run_now(body or {})
        if method == "GET" and path == "/api/2.2/jobs/runs/get":
            return self.get_run(query)
        if method == "POST" and path == "/api/2.0/sql/statements":
            return self.execute(body or {})
        chunk = re.fullmatch(r"/api/2\.0/sql/statements/([0-9a-f]+)/result/chunks/(\d+)", path)
        if method == "GET" and chunk:
            if chunk.group(1) not in self.statements:
                raise Rejected(404, "no such statement")
            return self._chunk(chunk.group(1), int(chunk.group(2)))
        single = re.fullmatch(r"/api/2\.0/sql/statements/([0-9a-f]+)", path)
        if method == "GET" and single:
            return self._statement(single.group(1))
        cancel = re.fullmatch(r"/api/2\.0/sql/statements/([0-9a-f]+)/cancel", path)
        if method == "POST" and cancel:
            return {}
        raise Rejected(404, f"no such API: {method} {path}")

    def _handler(self):
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                return

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self):
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        raise Rejected(401, "Invalid access token.")
                    body = None
                    if self.command == "POST":
                        try:
                            body = json.loads(raw or b"{}")
                        except ValueError:
                            raise Rejected(400, "Malformed request body") from None
                        if not isinstance(body, dict):
                            raise Rejected(400, "the body must be a JSON object")
                    peer.requests.append((self.command, split.path, body))
                    self._reply(200, peer._route(self.command, split.path,
                                                 parse_qs(split.query), body))
                except Rejected as exc:
                    self._reply(exc.status, {"error_code": ERROR_CODES.get(exc.status,
                                                                           "BAD_REQUEST"),
                                             "message": str(exc)})

            do_GET = do_POST = _serve

        return Handler
