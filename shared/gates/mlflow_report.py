"""Writes a gate report into MLflow as a run of the gate experiment (an adapter: all I/O)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

_PARAM_BATCH = 100
_PARAM_VALUE_LIMIT = 6000


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


def log_report_run(client, experiment_name: str, run_name: str, tags: dict[str, str],
                   params: dict[str, Any], metrics: dict[str, float],
                   texts: dict[str, str], binaries: dict[str, bytes]) -> tuple[str, str]:
    """Create a finished run holding the report; returns (experiment id, run id)."""
    from mlflow.entities import Metric, Param, RunStatus

    experiment = experiment_id(client, experiment_name)
    run = client.create_run(experiment, run_name=run_name, tags=tags)
    run_id = run.info.run_id
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
    except BaseException:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return experiment, run_id
