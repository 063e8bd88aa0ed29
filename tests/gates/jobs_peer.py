"""A local HTTP peer for the Databricks Jobs calls the gate run makes, speaking the documented
wire format (Jobs API 2.1/2.2) and rejecting what Databricks rejects:

    POST /api/2.x/jobs/runs/submit      one-time run; `idempotency_token` (<= 64 characters):
                                        the same token answers the existing run_id
    GET  /api/2.x/jobs/runs/get         ?run_id=: the run, its state and its task runs
    GET  /api/2.x/jobs/runs/get-output  ?run_id= of a task run: its stdout as `logs`

A submitted spark_python_task is run by `runner(python_file, parameters) -> (succeeded, logs)`
on a thread, so the run is PENDING/RUNNING until the runner returns.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

from tests.databricks_peer_base import ERROR_CODES, LoopbackPeer, Rejected

TOKEN = "dapi-jobs-peer-token"
SUBMIT_FIELDS = {"run_name", "tasks", "idempotency_token", "environments", "timeout_seconds",
                 "access_control_list", "budget_policy_id", "email_notifications",
                 "environment_variables", "git_source", "health", "notification_settings",
                 "queue", "run_as", "webhook_notifications", "usage_policy_id",
                 "performance_target", "duration_target"}
TASK_KEY = re.compile(r"^[\w\-.]{1,100}$")
Runner = Callable[[str, list[str]], tuple[bool, str]]


class JobsPeer(LoopbackPeer):
    def __init__(self, runner: Runner):
        self.runner = runner
        self.runs: dict[int, dict] = {}
        self.task_runs: dict[int, dict] = {}
        self.by_token: dict[str, int] = {}
        self.submits = 0
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        super().__init__()

    # -- behaviour ----------------------------------------------------------------------------

    def _submit(self, body) -> dict:
        if not isinstance(body, dict):
            raise Rejected(400, "request body must be a JSON object")
        unknown = set(body) - SUBMIT_FIELDS
        if unknown:
            raise Rejected(400, f"unknown fields: {sorted(unknown)}")
        token = body.get("idempotency_token")
        if token is not None and (not isinstance(token, str) or not 0 < len(token) <= 64):
            raise Rejected(400, "idempotency_token must be a string of at most 64 characters")
        if token in self.by_token:
            return {"run_id": self.by_token[token]}
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or len(tasks) != 1:
            raise Rejected(400, "this peer runs exactly one task")
        task = tasks[0]
        environments = {e.get("environment_key") for e in body.get("environments") or []}
        self._check_task(task, environments)
        self.submits += 1
        run_id, task_run_id = next(self._ids), next(self._ids)
        run = {"run_id": run_id, "run_name": body.get("run_name", "Untitled"),
               "run_type": "SUBMIT_RUN", "state": {"life_cycle_state": "PENDING"},
               "tasks": [{"run_id": task_run_id, "task_key": task["task_key"],
                          "state": {"life_cycle_state": "PENDING"}}]}
        self.runs[run_id] = run
        self.task_runs[task_run_id] = {"run": run, "logs": None}
        if token is not None:
            self.by_token[token] = run_id
        python = task["spark_python_task"]
        threading.Thread(target=self._execute, daemon=True,
                         args=(run_id, task_run_id, python["python_file"],
                               python.get("parameters", []))).start()
        return {"run_id": run_id}

    @staticmethod
    def _check_task(task, environments: set) -> None:
        if not isinstance(task, dict) or not TASK_KEY.match(str(task.get("task_key", ""))):
            raise Rejected(400, "every task needs a task_key of letters, digits, _ - .")
        python = task.get("spark_python_task")
        if not isinstance(python, dict) or not isinstance(python.get("python_file"), str) \
                or not python["python_file"]:
            raise Rejected(400, "spark_python_task.python_file is required")
        parameters = python.get("parameters", [])
        if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
            raise Rejected(400, "spark_python_task.parameters must be a list of strings")
        computes = [k for k in ("existing_cluster_id", "new_cluster", "environment_key",
                                "job_cluster_key") if task.get(k)]
        if len(computes) != 1:
            raise Rejected(400, f"a task needs exactly one compute, not {computes}")
        if task.get("environment_key") and task["environment_key"] not in environments:
            raise Rejected(400, f"environment_key {task['environment_key']!r} is not among "
                                f"the run's environments")

    def _execute(self, run_id: int, task_run_id: int, python_file: str,
                 parameters: list[str]) -> None:
        with self._lock:
            for state in (self.runs[run_id]["state"], self.runs[run_id]["tasks"][0]["state"]):
                state["life_cycle_state"] = "RUNNING"
        try:
            succeeded, logs = self.runner(python_file, parameters)
        except Exception as exc:  # the task's own failure, as Databricks reports it
            succeeded, logs = False, repr(exc)
        result = {"life_cycle_state": "TERMINATED",
                  "result_state": "SUCCESS" if succeeded else "FAILED",
                  "state_message": "" if succeeded else "Task summarise failed"}
        with self._lock:
            self.runs[run_id]["state"] = dict(result)
            self.runs[run_id]["tasks"][0]["state"] = dict(result)
            self.task_runs[task_run_id]["logs"] = logs

    def _get(self, query: dict) -> dict:
        run_id = self._run_id(query)
        if run_id not in self.runs:
            raise Rejected(400, f"Run {run_id} does not exist.")
        return json.loads(json.dumps(self.runs[run_id]))

    def _output(self, query: dict) -> dict:
        run_id = self._run_id(query)
        if run_id in self.runs:
            raise Rejected(400, "Retrieving the output of runs with multiple tasks is not "
                                "supported. Please retrieve the output of each individual "
                                "task run instead.")
        if run_id not in self.task_runs:
            raise Rejected(400, f"Run {run_id} does not exist.")
        found = self.task_runs[run_id]
        return {"metadata": found["run"]["tasks"][0], "logs": found["logs"] or "",
                "logs_truncated": False}

    @staticmethod
    def _run_id(query: dict) -> int:
        values = query.get("run_id", [])
        if len(values) != 1 or not values[0].isdigit():
            raise Rejected(400, "run_id must be one integer")
        return int(values[0])

    def _handler(self):
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlparse(self.path)
                if url.path == "/.well-known/databricks-config":
                    return self._send(404, {"error_code": "NOT_FOUND", "message": "not here"})
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error_code": ERROR_CODES[401],
                                            "message": "invalid access token"})
                m = re.match(r"^/api/2\.[12]/jobs/runs/(submit|get|get-output)$", url.path)
                try:
                    if not m:
                        raise Rejected(404, f"no such API: {url.path}")
                    call = (self.command, m.group(1))
                    with peer._lock:
                        if call == ("POST", "submit"):
                            try:
                                body = json.loads(raw) if raw else None
                            except ValueError:
                                raise Rejected(400, "malformed JSON") from None
                            reply = peer._submit(body)
                        elif call == ("GET", "get"):
                            reply = peer._get(parse_qs(url.query))
                        elif call == ("GET", "get-output"):
                            reply = peer._output(parse_qs(url.query))
                        else:
                            raise Rejected(405, f"{self.command} not allowed here")
                except Rejected as exc:
                    return self._send(exc.status, {"error_code": ERROR_CODES[exc.status],
                                                   "message": str(exc)})
                return self._send(200, reply)

            do_GET = do_POST = _serve

        return Handler
