"""The gate summary as a one-time Databricks job: the gate run submits this file as a
`spark_python_task` (Jobs API `runs/submit`) with the SummaryRequest as its one parameter, waits
for the run and reads the summary back from the run's output (the last line this file prints).

The idempotency token follows from the gate request's key and the request itself, so a
redelivered gate request finds the run it started instead of starting a second one (Databricks
answers a repeated token with the existing run_id). A run that fails is the gate run's data
error; a re-run request (a new key) submits a new run.

On the cluster, `SparkSession.builder.getOrCreate()` is the cluster's session: Spark Connect on
serverless and shared clusters, which is all shared/gates/spark.py needs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

if __package__ in (None, ""):  # run as a file by a Databricks spark_python_task
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from shared.gates.evaluation import EvaluationDataError  # noqa: E402
from shared.gates.spark import SummaryRequest, run_request  # noqa: E402
from shared.gates.summaries import (  # noqa: E402
    HoldoutSummary,
    summary_from_dict,
    summary_to_dict,
)

MARKER = "GATEHOUSE_SUMMARY "
TASK_KEY = "summarise"
ENVIRONMENT_KEY = "gatehouse"


def main(arguments: list[str], spark=None, out: TextIO = sys.stdout) -> None:
    """Summarise the request given as JSON; print the result (or the data error) as one line."""
    request = SummaryRequest(**json.loads(arguments[0]))
    if spark is None:
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()
    try:
        found: dict[str, Any] = {"summary": summary_to_dict(run_request(spark, request))}
    except EvaluationDataError as exc:
        found = {"error": str(exc)}
    print(MARKER + json.dumps(found), file=out, flush=True)


def idempotency_token(request: SummaryRequest, key: str) -> str:
    """64 hex characters (the API's limit) from the gate request's key and the request."""
    canonical = json.dumps([key, asdict(request)], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def summary_from_logs(logs: str | None, run_id: int) -> HoldoutSummary:
    lines = [line for line in (logs or "").splitlines() if line.startswith(MARKER)]
    if not lines:
        raise RuntimeError(f"summary job run {run_id} printed no summary")
    found = json.loads(lines[-1][len(MARKER):])
    if "error" in found:
        raise EvaluationDataError(found["error"])
    return summary_from_dict(found["summary"])


@dataclass(frozen=True)
class DatabricksSummaryJob:
    """Submits the summary job and waits for it (a cluster id, or serverless compute)."""

    client: Any  # databricks.sdk.WorkspaceClient
    script: str
    cluster_id: str | None = None
    dependencies: tuple[str, ...] = ()  # serverless: the gatehouse package to install
    timeout: timedelta = timedelta(minutes=30)
    poll_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings) -> DatabricksSummaryJob:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config

        host, token = settings.databricks_host or "", settings.databricks_token
        config = Config(host=host, token=token, auth_type="pat") if token else Config(host=host)
        return cls(WorkspaceClient(config=config), str(settings.gates_job_script),
                   settings.gates_job_cluster)

    def __call__(self, request: SummaryRequest, key: str) -> HoldoutSummary:
        from databricks.sdk.service import compute, jobs

        task = jobs.SubmitTask(
            task_key=TASK_KEY, existing_cluster_id=self.cluster_id,
            environment_key=None if self.cluster_id else ENVIRONMENT_KEY,
            spark_python_task=jobs.SparkPythonTask(python_file=self.script,
                                                   parameters=[json.dumps(asdict(request))]))
        environments = None if self.cluster_id else [jobs.JobEnvironment(
            ENVIRONMENT_KEY, compute.Environment(environment_version="2",
                                                 dependencies=list(self.dependencies)))]
        submitted = self.client.jobs.submit(
            run_name=f"gatehouse gates {key}"[:200], tasks=[task], environments=environments,
            idempotency_token=idempotency_token(request, key))
        run = self._finished(submitted.run_id)
        state = run.state
        if state is None or state.result_state != jobs.RunResultState.SUCCESS:
            why = (f"{state.result_state.value if state.result_state else state.life_cycle_state}"
                   f": {state.state_message}") if state else "no state"
            raise EvaluationDataError(f"summary job run {run.run_id} did not succeed ({why})")
        task_run = next(t for t in run.tasks or [] if t.task_key == TASK_KEY)
        output = self.client.jobs.get_run_output(task_run.run_id)
        return summary_from_logs(output.logs, run.run_id)

    def _finished(self, run_id: int):
        """The run once it has ended, polled every poll_seconds until the timeout."""
        from databricks.sdk.service import jobs

        deadline = time.monotonic() + self.timeout.total_seconds()
        ended = (jobs.RunLifeCycleState.TERMINATED, jobs.RunLifeCycleState.SKIPPED,
                 jobs.RunLifeCycleState.INTERNAL_ERROR)
        while True:
            run = self.client.jobs.get_run(run_id)
            if run.state is not None and run.state.life_cycle_state in ended:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"summary job run {run_id} still running after "
                                   f"{self.timeout}")
            time.sleep(self.poll_seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
