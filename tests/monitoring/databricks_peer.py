"""A local HTTP peer for the Databricks calls the monitor and the retraining handler make,
speaking the documented wire format and rejecting what Databricks rejects.

    POST /api/2.2/jobs/run-now                 job_id, job_parameters, idempotency_token
    GET  /api/2.2/jobs/runs/get?run_id=        the run's status
    POST /api/2.0/sql/statements               statement execution (INLINE, JSON_ARRAY)
    GET  /api/2.0/sql/statements/{id}          poll a statement
    GET  /api/2.0/sql/statements/{id}/result/chunks/{n}

Jobs: a run-now with an idempotency token already used returns that token's run instead of
launching another (the documented guarantee). Statements: every `:name` marker must be bound by a
parameter of a known type; a table is `peer.tables["catalog.schema.table"]` = (rows as JSON_ARRAY
strings, index of the epoch-ms column the :since/:until parameters filter on); results come in
chunks of `chunk_rows`, after `pending_polls` PENDING answers.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime
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
TABLE = re.compile(r"FROM\s+((?:`[^`]+`\.?){1,3})", re.IGNORECASE)


def _epoch_ms(parameter: dict) -> int:
    value, kind = parameter.get("value"), parameter.get("type", "STRING")
    if kind == "BIGINT":
        return int(value)
    moment = datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class DatabricksPeer(LoopbackPeer):
    def __init__(self, chunk_rows: int = 2, pending_polls: int = 1):
        self.chunk_rows, self.pending_polls = chunk_rows, pending_polls
        self.jobs: set[int] = set()
        self.runs: dict[int, dict] = {}
        self.tokens: dict[str, int] = {}
        self.warehouses: set[str] = set()
        self.tables: dict[str, tuple[list[list], int]] = {}
        self.statements: dict[str, dict] = {}
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
        found = TABLE.search(statement)
        if not found:
            raise Rejected(400, "no table in the statement")
        table = found.group(1).replace("`", "")
        statement_id = uuid.uuid4().hex
        if self.fail_statements:
            record = {"state": "FAILED", "rows": [], "polls": 0,
                      "error": f"[TABLE_OR_VIEW_NOT_FOUND] {table}"}
        elif table not in self.tables:
            record = {"state": "FAILED", "rows": [], "polls": 0,
                      "error": f"[TABLE_OR_VIEW_NOT_FOUND] The table {table} cannot be found."}
        else:
            rows, ts_column = self.tables[table]
            since, until = _epoch_ms(parameters["since"]), _epoch_ms(parameters["until"])
            record = {"state": "SUCCEEDED", "polls": 0,
                      "rows": [r for r in rows if since <= int(r[ts_column]) < until]}
        with self._lock:
            self.statements[statement_id] = record
        return self._statement(statement_id)

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
        if pending:
            return {"statement_id": statement_id, "status": {"state": "PENDING"}}
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
