"""Databricks Model Serving through databricks-sdk's `WorkspaceClient.serving_endpoints`.

- `state`: GET /api/2.0/serving-endpoints/{name}; routes are read from `config.traffic_config`
  and mapped to model versions through `config.served_entities`.
- `set_traffic`: PUT /api/2.0/serving-endpoints/{name}/config with every served entity (the
  versions in the routes, existing ones keep their compute settings) and a `traffic_config`
  whose routes sum to 100 (checked before anything is sent), then polls until
  `state.config_update` is no longer IN_PROGRESS. A failed update leaves Databricks serving the
  previous config, so an endpoint is never left half-routed.
- `health`: GET .../metrics (Prometheus/OpenMetrics text: per served entity request, 4xx and 5xx
  counts and the `request_latency_ms` histogram over the last minute).

409 (an update in progress), 429 and 5xx are retried with bounded exponential backoff; the SDK
already honours Retry-After on 429/503 within its own retry budget.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable

from shared.serving.base import (
    EndpointState,
    HealthReport,
    Routes,
    ServingBackend,
    ServingError,
    VersionHealth,
    check_routes,
)

log = logging.getLogger("gatehouse.serving.databricks")
ENTITY_LABELS = ("served_entity_name", "served_model_name", "served_entity", "served_model",
                 "entity_name")
METRICS_WINDOW_SECONDS = 60.0
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(\S+))?\s*$')
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def served_entity_name(model_name: str, version: str) -> str:
    """`<model>-<version>` from the last part of a (Unity Catalog) name, in entity characters."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", model_name.split(".")[-1]).strip("-_") or "model"
    return f"{base[:62 - len(str(version))]}-{version}"


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float, float | None]]:
    """Samples `(name, labels, value, timestamp_seconds)` of a Prometheus/OpenMetrics text."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, raw_labels, raw_value, raw_ts = m.groups()
        labels = {k: bytes(v, "utf-8").decode("unicode_escape")
                  for k, v in _LABEL.findall(raw_labels or "")}
        try:
            value = float(raw_value)
        except ValueError:
            continue
        timestamp = None
        if raw_ts:
            try:
                timestamp = float(raw_ts)
                timestamp = timestamp / 1000 if timestamp > 1e11 else timestamp  # ms or s
            except ValueError:
                timestamp = None
        samples.append((name, labels, value, timestamp))
    return samples


def _histogram_samples(buckets: dict[float, float]) -> tuple[tuple[float, int], ...]:
    """Cumulative `le` buckets as weighted samples at each bucket's upper bound (beyond the
    last finite bound counts as twice that bound)."""
    pairs, previous = [], 0.0
    finite = [b for b in sorted(buckets) if math.isfinite(b)]
    for bound in sorted(buckets):
        count = int(round(buckets[bound] - previous))
        previous = buckets[bound]
        if count <= 0:
            continue
        value = bound if math.isfinite(bound) else (finite[-1] * 2 if finite else 1e6)
        pairs.append((float(value), count))
    return tuple(pairs)


def health_from_metrics(text: str, entity_versions: dict[str, str], endpoint: str,
                        now: float) -> HealthReport:
    """Per-version figures from one metrics export; entities map to versions by name."""
    counts: dict[str, dict[str, float]] = {}
    buckets: dict[str, dict[float, float]] = {}
    stamps = []
    for name, labels, value, timestamp in parse_prometheus(text):
        entity = next((labels[k] for k in ENTITY_LABELS if k in labels), None)
        version = entity_versions.get(entity) if entity else None
        if version is None or not math.isfinite(value):
            continue
        if timestamp is not None:
            stamps.append(timestamp)
        figures = counts.setdefault(version, {})
        if name in ("request_count_total", "request_4xx_count_total", "request_5xx_count_total",
                    "request_latency_ms_count"):
            figures[name] = figures.get(name, 0.0) + value
        elif name == "request_latency_ms_bucket" and "le" in labels:
            bound = float(labels["le"].replace("+Inf", "inf"))
            version_buckets = buckets.setdefault(version, {})
            version_buckets[bound] = version_buckets.get(bound, 0.0) + value
    window_end = max(stamps) if stamps else now
    versions = {}
    for version, figures in counts.items():
        requests = figures.get("request_count_total", figures.get("request_latency_ms_count"))
        if requests is None:
            continue
        errors = figures.get("request_4xx_count_total", 0.0) + figures.get(
            "request_5xx_count_total", 0.0)
        versions[version] = VersionHealth(version, int(round(requests)), int(round(errors)),
                                          _histogram_samples(buckets.get(version, {})))
    return HealthReport(endpoint=endpoint, window_start=window_end - METRICS_WINDOW_SECONDS,
                        window_end=window_end, versions=versions, cumulative=False,
                        detail="" if versions else "the metrics export has no per-entity figures")


class DatabricksServing(ServingBackend):
    name = "databricks"

    def __init__(self, client, *, attempts: int = 6, base_delay: float = 2.0,
                 max_delay: float = 60.0, poll_interval: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time):
        self.client = client
        self.attempts, self.base_delay, self.max_delay = attempts, base_delay, max_delay
        self.poll_interval = poll_interval
        self._sleep, self._clock = sleep, clock

    @classmethod
    def from_env(cls, host: str, token: str | None = None, **kwargs) -> DatabricksServing:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.config import Config

        config = Config(host=host, token=token, auth_type="pat") if token else Config(host=host)
        return cls(WorkspaceClient(config=config), **kwargs)

    # -- retries ------------------------------------------------------------------------------

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        import requests
        from databricks.sdk.errors import (
            DatabricksError,
            DeadlineExceeded,
            InternalError,
            ResourceConflict,
            TemporarilyUnavailable,
            TooManyRequests,
        )

        if isinstance(exc, (ResourceConflict, TooManyRequests, InternalError,
                            TemporarilyUnavailable, DeadlineExceeded, TimeoutError,
                            requests.ConnectionError)):
            return True
        return type(exc) is DatabricksError  # a status the SDK has no class for (502 ...)

    def _retry(self, what: str, call: Callable, on_conflict: Callable | None = None):
        from databricks.sdk.errors import ResourceConflict

        for attempt in range(1, self.attempts + 1):
            try:
                return call()
            except Exception as exc:
                if not self._transient(exc) or attempt == self.attempts:
                    raise ServingError(f"{what}: {type(exc).__name__}: {exc}") from exc
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                log.warning("%s failed (%s: %s); retry %d/%d in %.1fs", what,
                            type(exc).__name__, exc, attempt, self.attempts - 1, delay)
                self._sleep(delay * (0.5 + random.random() / 2))
                if isinstance(exc, ResourceConflict) and on_conflict is not None:
                    done = on_conflict()
                    if done is not None:
                        return done
        raise ServingError(f"{what}: gave up")  # pragma: no cover - the loop returns or raises

    # -- reading ------------------------------------------------------------------------------

    def _get(self, endpoint: str):
        from databricks.sdk.errors import NotFound

        try:
            return self._retry(f"get {endpoint}",
                               lambda: self.client.serving_endpoints.get(endpoint))
        except ServingError as exc:
            if isinstance(exc.__cause__, NotFound):
                return None
            raise

    @staticmethod
    def _entities(detailed) -> list:
        config = detailed.config
        return list(config.served_entities or []) if config else []

    @classmethod
    def _entity_versions(cls, detailed) -> dict[str, str]:
        return {e.name: str(e.entity_version) for e in cls._entities(detailed)
                if e.name and e.entity_version is not None}

    @classmethod
    def _to_state(cls, endpoint: str, detailed) -> EndpointState:
        from databricks.sdk.service.serving import (
            EndpointStateConfigUpdate,
            EndpointStateReady,
            ServedModelStateDeployment,
        )

        versions = cls._entity_versions(detailed)
        routes: Routes = {}
        traffic = detailed.config.traffic_config if detailed.config else None
        for route in (traffic.routes or []) if traffic else []:
            entity = route.served_entity_name or route.served_model_name
            if entity in versions:
                routes[versions[entity]] = routes.get(versions[entity], 0) + int(
                    route.traffic_percentage or 0)
        entities = cls._entities(detailed)
        state = detailed.state
        updating = bool(state and state.config_update == EndpointStateConfigUpdate.IN_PROGRESS)
        deployed = all(e.state is None or e.state.deployment in (
            None, ServedModelStateDeployment.DEPLOYMENT_READY) for e in entities)
        ready = bool(state and state.ready == EndpointStateReady.READY) and deployed
        models = {e.entity_name for e in entities if e.entity_name}
        updated = detailed.last_updated_timestamp
        detail = "" if state is None or state.config_update is None else state.config_update.value
        return EndpointState(endpoint=endpoint,
                             model_name=models.pop() if len(models) == 1 else None,
                             routes=routes, ready=ready, updating=updating,
                             config_updated_at=updated / 1000 if updated else None, detail=detail)

    def state(self, endpoint: str) -> EndpointState | None:
        detailed = self._get(endpoint)
        return self._to_state(endpoint, detailed) if detailed is not None else None

    def health(self, endpoint: str, since: float) -> HealthReport:
        detailed = self._get(endpoint)
        if detailed is None:
            raise ServingError(f"serving endpoint {endpoint!r} does not exist")
        exported = self._retry(f"metrics of {endpoint}",
                               lambda: self.client.serving_endpoints.export_metrics(endpoint))
        contents = exported.contents.read() if exported.contents is not None else b""
        text = contents.decode("utf-8", "replace") if isinstance(contents, bytes) else contents
        return health_from_metrics(text, self._entity_versions(detailed), endpoint, self._clock())

    # -- changing -----------------------------------------------------------------------------

    def _settle(self, endpoint: str, timeout: float):
        """Poll until no config update is in progress (or `timeout`); the last detail read."""
        from databricks.sdk.service.serving import EndpointStateConfigUpdate

        deadline = self._clock() + timeout
        while True:
            detailed = self._get(endpoint)
            if detailed is None:
                raise ServingError(f"serving endpoint {endpoint!r} does not exist")
            status = detailed.state.config_update if detailed.state else None
            if status != EndpointStateConfigUpdate.IN_PROGRESS or self._clock() >= deadline:
                return detailed
            self._sleep(self.poll_interval)

    def wait_ready(self, endpoint: str, timeout: float = 1200.0) -> EndpointState:
        detailed = self._settle(endpoint, timeout)
        state = self._to_state(endpoint, detailed)
        if state.updating:
            raise ServingError(f"{endpoint}: config update still in progress after {timeout:.0f}s")
        return state

    def _desired_entities(self, detailed, model_name: str, routes: Routes) -> list:
        from databricks.sdk.service.serving import ServedEntityInput

        accepted = set(ServedEntityInput.__dataclass_fields__)
        existing = {(e.entity_name, str(e.entity_version)): e for e in self._entities(detailed)}
        template = next((e for (name, _), e in existing.items() if name == model_name), None)
        entities = []
        for version in routes:
            current = existing.get((model_name, version))
            if current is not None:
                spec = {k: v for k, v in current.as_dict().items() if k in accepted}
            elif template is not None:
                spec = {k: v for k, v in template.as_dict().items() if k in accepted}
            else:
                spec = {"workload_size": "Small", "scale_to_zero_enabled": True}
            spec.update(entity_name=model_name, entity_version=version,
                        name=current.name if current is not None and current.name
                        else served_entity_name(model_name, version))
            entities.append(ServedEntityInput.from_dict(spec))
        return entities

    def set_traffic(self, endpoint: str, model_name: str, routes: Routes,
                    wait_seconds: float = 1200.0) -> EndpointState:
        from databricks.sdk.service.serving import EndpointStateConfigUpdate, Route, TrafficConfig

        routes = check_routes(routes)
        detailed = self._settle(endpoint, wait_seconds)
        current = self._to_state(endpoint, detailed)
        if current.routes == routes and current.model_name == model_name and not current.updating:
            return current
        entities = self._desired_entities(detailed, model_name, routes)
        names = {e.entity_version: e.name for e in entities}
        traffic = TrafficConfig(routes=[Route(served_entity_name=names[v], traffic_percentage=p)
                                        for v, p in routes.items()])

        def already_applied():
            # After a 409 (or a retried PUT that had gone through), the target may be in place.
            settled = self._settle(endpoint, wait_seconds)
            state = self._to_state(endpoint, settled)
            return state if state.routes == routes and not state.updating else None

        self._retry(f"update config of {endpoint}",
                    lambda: self.client.serving_endpoints.update_config(
                        name=endpoint, served_entities=entities, traffic_config=traffic),
                    on_conflict=already_applied)
        detailed = self._settle(endpoint, wait_seconds)
        status = detailed.state.config_update if detailed.state else None
        if status in (EndpointStateConfigUpdate.UPDATE_FAILED,
                      EndpointStateConfigUpdate.UPDATE_CANCELED):
            raise ServingError(f"{endpoint}: config update {status.value}; Databricks keeps "
                               f"serving the previous config")
        return self._to_state(endpoint, detailed)
