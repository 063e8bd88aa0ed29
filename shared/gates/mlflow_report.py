"""Writes a gate report into MLflow as a run of the gate experiment (an adapter: all I/O).

Each report run carries the key of the request it answers (`gatehouse.run_key`, and its digest
`gatehouse.run_digest`, which is what searches use: it needs no quoting). A handler redone after
a crash finds its run by that key instead of logging a second one (`find_report_runs`):
- a FINISHED run is the report: it is reused as it stands;
- any other run with the key (RUNNING, FAILED, KILLED: a worker died or failed while logging
  it) is incomplete evidence, so it is replaced: marked FAILED and deleted, and a new run is
  logged from a fresh evaluation. Completing it in place would mix two evaluations in one run.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.foundation.failpoints import failpoint

_PARAM_BATCH = 100
_PARAM_VALUE_LIMIT = 6000
RUN_KEY_TAG = "gatehouse.run_key"
RUN_DIGEST_TAG = "gatehouse.run_digest"
FINISHED = "FINISHED"


@dataclass(frozen=True)
class FoundRun:
    """A report run that already carries a request's key."""

    run_id: str
    experiment_id: str
    status: str

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


def run_digest(run_key: str) -> str:
    return hashlib.sha256(run_key.encode("utf-8")).hexdigest()[:40]


def run_key_tags(run_key: str) -> dict[str, str]:
    return {RUN_KEY_TAG: run_key, RUN_DIGEST_TAG: run_digest(run_key)}


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return flat
    return {prefix: value}


def experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # created concurrently by another worker
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def run_url(tracking_uri: str | None, experiment: str, run_id: str) -> str | None:
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    return None


def find_report_runs(client, experiment_name: str, run_key: str) -> list[FoundRun]:
    """The live (not deleted) runs of the experiment carrying `run_key`, oldest first."""
    found = client.get_experiment_by_name(experiment_name)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id],
                              filter_string=f"tags.`{RUN_DIGEST_TAG}` = '{run_digest(run_key)}'",
                              order_by=["attributes.start_time ASC"], max_results=100)
    return [FoundRun(run.info.run_id, found.experiment_id, run.info.status) for run in runs
            if run.data.tags.get(RUN_KEY_TAG) == run_key]


def discard_run(client, run_id: str) -> None:
    """Retire an unfinished report run: FAILED, then deleted (searches skip deleted runs)."""
    from mlflow.entities import RunStatus

    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    client.delete_run(run_id)


def load_text(client, run_id: str, name: str) -> str:
    with tempfile.TemporaryDirectory(prefix="gatehouse-report-") as folder:
        return Path(client.download_artifacts(run_id, name, folder)).read_text(encoding="utf-8")


def load_json(client, run_id: str, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(load_text(client, run_id, name))
    return document


def log_report_run(client, experiment_name: str, run_name: str, tags: dict[str, str],
                   params: dict[str, Any], metrics: dict[str, float],
                   texts: dict[str, str], binaries: dict[str, bytes],
                   before_finish: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Create a finished run holding the report; returns (experiment id, run id).

    `before_finish(run_id)` runs once everything is logged, before the run is marked FINISHED:
    whatever it writes is part of the report, done again if the run never finished."""
    from mlflow.entities import Metric, Param, RunStatus

    experiment = experiment_id(client, experiment_name)
    run = client.create_run(experiment, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    failpoint("gates.report_run_created")
    try:
        now = int(time.time() * 1000)
        param_list = [Param(key, str(value)[:_PARAM_VALUE_LIMIT])
                      for key, value in params.items()]
        for start in range(0, len(param_list), _PARAM_BATCH):
            client.log_batch(run_id, params=param_list[start:start + _PARAM_BATCH])
        metric_list = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        for start in range(0, len(metric_list), 1000):
            client.log_batch(run_id, metrics=metric_list[start:start + 1000])
        for name, text in texts.items():
            client.log_text(run_id, text, name)
        with tempfile.TemporaryDirectory(prefix="gatehouse-report-") as folder:
            for name, content in binaries.items():
                path = Path(folder) / name
                path.write_bytes(content)
                client.log_artifact(run_id, str(path))
        if before_finish is not None:
            before_finish(run_id)
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return experiment, run_id
