"""The monitor's and the retraining handler's adapters, built from the settings.

Traffic: the embedded payload log at GATEHOUSE_PAYLOAD_LOG, and, when DATABRICKS_HOST is set,
the inference table of every model whose monitoring policy names `inference_table` and
`warehouse_id` (its endpoint is the rollout policy's). References: the state table, else the
`gatehouse/reference.json` artifact of the version's run. Figures go to MLflow when
MLFLOW_TRACKING_URI is set.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from shared.foundation import runtime
from shared.foundation.settings import Settings
from shared.monitoring.policy import MonitoringPolicy
from shared.policy import monitoring_policy_for

log = logging.getLogger("gatehouse.monitor")


class NotConfigured(Exception):
    """Nothing to monitor: no payload log and no inference table configured."""


def databricks_client(settings: Settings):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.config import Config

    host, token = settings.databricks_host, settings.databricks_token
    return WorkspaceClient(config=Config(host=host, token=token, auth_type="pat") if token
                           else Config(host=host))


def inference_sources(settings: Settings) -> list:
    from shared.monitoring.sources import DatabricksInferenceSource
    from shared.policy import current_policy

    if not settings.databricks_host:
        return []
    policy = current_policy()
    sources, client = [], None
    for model in policy.models:
        monitoring = monitoring_policy_for(model)
        if not (monitoring.enabled and monitoring.inference_table and monitoring.warehouse_id):
            continue
        client = client or databricks_client(settings)
        endpoint = policy.for_model(model).rollout.endpoint_for(model)
        sources.append(DatabricksInferenceSource(client, monitoring.warehouse_id,
                                                 monitoring.inference_table, endpoint,
                                                 monitoring.inference_table_kind))
    return sources


RECENT_REQUESTS_LOOKBACK_SECONDS = 7 * 24 * 3600


def recent_requests(settings: Settings):
    """(endpoint, limit) -> the latest successful request bodies its inference table holds
    (none for an endpoint without one): the payloads a rollout replays on Databricks."""
    def latest(endpoint: str, limit: int) -> list[dict]:
        from shared.monitoring.sources import SourceError

        source = next((found for found in inference_sources(settings)
                       if found.endpoint == endpoint), None)
        if source is None:
            return []
        now = time.time()
        try:
            return source.recent_requests(limit, now - RECENT_REQUESTS_LOOKBACK_SECONDS, now)
        except SourceError as exc:
            log.warning("%s: no recent requests from its inference table: %s", endpoint, exc)
            return []

    return latest


def traffic(settings: Settings):
    """Every configured source of served traffic as one Traffic, or NotConfigured."""
    from shared.monitoring.sources import PayloadLogSource, Traffic
    from shared.serving.payload_log import PayloadLog

    sources: list = []
    path = settings.payload_log
    if path and path.exists():
        sources.append(PayloadLogSource(PayloadLog(path)))
    sources.extend(inference_sources(settings))
    if not sources:
        raise NotConfigured("no traffic to monitor: set GATEHOUSE_PAYLOAD_LOG (the embedded "
                            "payload log) or DATABRICKS_HOST with monitoring.inference_table "
                            "and warehouse_id in the policy")
    return Traffic(sources)


REFERENCE_TTL_SECONDS = 600.0
_found: dict[tuple[str, str], tuple[float, object]] = {}


class References:
    """Reference lookups for one monitor run or tick (cached: it asks once per version). A
    reference found is kept by the worker for REFERENCE_TTL_SECONDS, since every tick of the
    version's endpoint needs it; one not found is asked for again by the next run."""

    def __init__(self, store, use_mlflow: bool, clock=time.monotonic):
        self.store, self.use_mlflow, self.clock = store, use_mlflow, clock
        self._cache: dict[tuple[str, str], object] = {}

    def __call__(self, model_name: str, version: str):
        key = (model_name, version)
        if key not in self._cache:
            kept = _found.get(key)
            if kept is not None and self.clock() - kept[0] < REFERENCE_TTL_SECONDS:
                self._cache[key] = kept[1]
            else:
                self._cache[key] = self._find(model_name, version)
                if self._cache[key] is not None:
                    _found[key] = (self.clock(), self._cache[key])
        return self._cache[key]

    def _find(self, model_name: str, version: str):
        from shared.monitoring.reference import load_reference_artifact

        found = self.store.load(model_name, version)
        if found is not None or not self.use_mlflow:
            return found
        try:
            from shared.registry.client import Registry

            run_id = Registry().version(model_name, version).run_id
        except Exception as exc:  # the registry is not ours to fail on: judge without it
            log.warning("no reference for %s v%s: %s", model_name, version, exc)
            return None
        return load_reference_artifact(run_id) if run_id else None


def build_monitor(settings: Settings | None = None):
    """A monitor for one round or one tick (its reference cache lives as long); the stores and
    the traffic sources are built once per worker and settings."""
    from shared.monitoring.service import MlflowMonitorLog, Monitor

    settings = runtime.settings() if settings is None else settings
    connection = runtime.storage_connection()
    use_mlflow = bool(settings.mlflow_tracking_uri)
    defaults: MonitoringPolicy = monitoring_policy_for(None)
    return Monitor(
        traffic=_traffic_of(settings), states=state_store(connection),
        publish=runtime.bus().publish, policy_for=monitoring_policy_for,
        reference_for=References(reference_store(connection), use_mlflow),
        labels=label_store(connection),
        metrics_log=MlflowMonitorLog(defaults.experiment) if use_mlflow else None)


_built: dict[int, tuple[Settings, object]] = {}


def _traffic_of(settings: Settings):
    """traffic(settings), once per settings object (runtime reads the settings once a worker)."""
    found = _built.get(id(settings))
    if found is None or found[0] is not settings:
        _built.clear()
        found = _built[id(settings)] = (settings, traffic(settings))
    return found[1]


@lru_cache(maxsize=2)
def state_store(connection_string: str):
    from shared.monitoring.service import MonitorStateStore

    return MonitorStateStore.connect(connection_string)


@lru_cache(maxsize=2)
def reference_store(connection_string: str):
    from shared.monitoring.reference import ReferenceStore

    return ReferenceStore.connect(connection_string)


@lru_cache(maxsize=2)
def label_store(connection_string: str):
    from shared.monitoring.labels import LabelStore

    return LabelStore.connect(connection_string)


def monitor_one(due) -> dict | None:
    """A monitor tick from the queue: judge one endpoint's windows due at the tick's time."""
    try:
        monitor = build_monitor()
    except NotConfigured as exc:
        log.info("monitor is off; tick for %s dropped: %s", due.endpoint, exc)
        return None
    return monitor.tick(due.endpoint, due.due_at, due.labelled)
