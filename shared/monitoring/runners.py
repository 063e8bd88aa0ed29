"""Where a retraining run starts: a Databricks job, or a local subprocess.

- DatabricksJobRunner: `jobs.run_now(job_id, job_parameters=..., idempotency_token=...)` through
  databricks-sdk; Databricks launches exactly one run per token, so a retried start returns the
  same run id.
- LocalRunner: the policy's training entrypoint as a subprocess, supervised by this module's
  `main` (which records the exit code). A marker file per token, created exclusively, makes a
  retried start return the run it started instead of starting another. The job parameters reach
  the entrypoint as GATEHOUSE_RETRAIN_MODEL / _REASON / _WINDOW / _ALERT_FINGERPRINT.

    python -m shared.monitoring.runners --marker <file> -- <command...>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from shared.foundation import runtime
from shared.foundation.settings import Settings
from shared.foundation.storage import PROJECT_ROOT

ACTIVE_STATES = {"QUEUED", "PENDING", "RUNNING", "TERMINATING", "BLOCKED", "WAITING",
                 "WAITING_FOR_RETRY"}


class RunnerError(Exception):
    """The run could not be started (after the runner's own retries)."""


class DatabricksJobRunner:
    name = "databricks"

    def __init__(self, client):
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabricksJobRunner:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        host, token = settings.databricks_host or "", settings.databricks_token
        config = Config(host=host, token=token, auth_type="pat") if token else Config(host=host)
        return cls(WorkspaceClient(config=config))

    def start(self, job_id: int, parameters: dict[str, str], token: str) -> str:
        from databricks.sdk.errors import DatabricksError

        try:
            waiter = self.client.jobs.run_now(job_id=job_id, job_parameters=parameters,
                                              idempotency_token=token)
        except DatabricksError as exc:
            raise RunnerError(f"Databricks job {job_id} did not start: {exc}") from exc
        return str(waiter.run_id)

    def active(self, run_ids: list[str]) -> set[str]:
        from databricks.sdk.errors import NotFound

        running = set()
        for run_id in run_ids:
            try:
                run = self.client.jobs.get_run(int(run_id))
            except NotFound:
                continue
            status = getattr(run, "status", None)
            state = getattr(getattr(status, "state", None), "value", None) or getattr(
                getattr(getattr(run, "state", None), "life_cycle_state", None), "value", None)
            if state in ACTIVE_STATES:
                running.add(run_id)
        return running


class LocalRunner:
    name = "local"

    def __init__(self, runs_dir: str | Path | None = None):
        self.runs_dir = Path(runs_dir or runtime.settings().retraining_runs_dir)

    def marker(self, token: str) -> Path:
        return self.runs_dir / f"{token}.json"

    @staticmethod
    def resolve(command: list[str]) -> list[str]:
        if command and command[0] in ("python", "python3"):
            return [sys.executable, *command[1:]]
        return list(command)

    def start(self, command: list[str], parameters: dict[str, str], token: str) -> str:
        if not command:
            raise RunnerError("no training entrypoint: set monitoring.retraining.entrypoint")
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        marker = self.marker(token)
        resolved = self.resolve(command)
        record = {"run_id": token, "command": resolved, "parameters": parameters,
                  "status": "starting", "started_at": time.time()}
        try:
            with open(marker, "x") as handle:
                json.dump(record, handle)
        except FileExistsError:
            return json.loads(marker.read_text() or "{}").get("run_id", token)
        env = {**os.environ, **{f"GATEHOUSE_RETRAIN_{key.upper()}": value
                                for key, value in parameters.items()}}
        log = open(self.runs_dir / f"{token}.log", "ab")
        try:
            subprocess.Popen([sys.executable, "-m", "shared.monitoring.runners", "--marker",
                              str(marker), "--", *resolved],
                             env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            marker.unlink(missing_ok=True)
            raise RunnerError(f"could not start {resolved}: {exc}") from exc
        finally:
            log.close()
        return token

    def status(self, run_id: str) -> dict:
        marker = self.marker(run_id)
        return json.loads(marker.read_text()) if marker.exists() else {}

    def active(self, run_ids: list[str]) -> set[str]:
        return {r for r in run_ids if self.status(r).get("status") in ("starting", "running")}

    def wait(self, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(run_id)
            if status.get("status") in ("succeeded", "failed"):
                return status
            time.sleep(0.2)
        raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f}s")


def _write(marker: Path, record: dict) -> None:
    temporary = marker.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(marker)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="supervise one local retraining run")
    parser.add_argument("--marker", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    marker = Path(args.marker)
    record = json.loads(marker.read_text())
    _write(marker, {**record, "status": "running", "pid": os.getpid()})
    exit_code = subprocess.call(command)
    _write(marker, {**record, "status": "succeeded" if exit_code == 0 else "failed",
                    "exit_code": exit_code, "finished_at": time.time()})
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
