"""The serving interface the rollout drives: one endpoint serving versions of one model.

Routes map a model version to its integer traffic percentage; they always sum to 100.
Latencies travel as weighted samples `(milliseconds, count)`, so exact samples (the embedded
server) and histogram buckets (Databricks' metrics export) go through the same tests.
A `PayloadRecord` is one request and its answer as a payload log (or an inference table) keeps
it; mirrored requests (the shadow step) have one record per version, the shadow's tagged.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

Routes = dict[str, int]
WeightedSamples = tuple[tuple[float, int], ...]


class ServingError(Exception):
    """The serving backend refused or failed an operation (after its retries)."""


class InvalidRoutes(ServingError, ValueError):
    pass


def check_routes(routes: Routes) -> Routes:
    """Routes as the backends accept them: integer percentages 0..100 summing to 100."""
    if not routes:
        raise InvalidRoutes("no routes: at least one version must take traffic")
    clean: Routes = {}
    for version, percent in routes.items():
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise InvalidRoutes(f"version {version}: traffic {percent!r} is not an integer 0..100")
        clean[str(version)] = percent
    if sum(clean.values()) != 100:
        raise InvalidRoutes(f"routes {clean} sum to {sum(clean.values())}, not 100")
    return clean


@dataclass(frozen=True)
class EndpointState:
    endpoint: str
    model_name: str | None
    routes: Routes
    ready: bool
    updating: bool
    config_updated_at: float | None = None  # epoch seconds of the last applied config change
    detail: str = ""
    shadow: str | None = None   # the version live requests are mirrored to (the shadow step)


@dataclass(frozen=True)
class VersionHealth:
    version: str
    requests: int
    errors: int
    latencies_ms: WeightedSamples = ()

    @property
    def error_rate(self) -> float | None:
        """None, never 0, when there were no requests."""
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True)
class HealthReport:
    """Per-version figures over [window_start, window_end] (epoch seconds).

    `cumulative`: the figures cover everything since the `since` asked for (embedded); otherwise
    they are one window of the backend's own (Databricks exports the last minute) and the caller
    accumulates windows itself.
    """

    endpoint: str
    window_start: float
    window_end: float
    versions: dict[str, VersionHealth] = field(default_factory=dict)
    cumulative: bool = True
    detail: str = ""


@dataclass(frozen=True)
class PayloadRecord:
    ts: float
    endpoint: str
    request_id: str
    model_name: str | None
    version: str | None
    inputs: str          # the request body as received (JSON text)
    outputs: str | None  # the response body (JSON text), None when the request failed
    latency_ms: float
    status: int
    error: str | None = None
    shadow: bool = False  # a mirrored request's answer from the shadow version, never returned

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def input_json(self):
        return json.loads(self.inputs)

    def output_json(self):
        return json.loads(self.outputs) if self.outputs else None


class ServingBackend(ABC):
    name: str = "serving"
    mirrors: bool = False   # can send live requests to a shadow version too (set_shadow)

    @abstractmethod
    def state(self, endpoint: str) -> EndpointState | None:
        """The endpoint's routes and readiness; None when it does not exist."""

    @abstractmethod
    def set_traffic(self, endpoint: str, model_name: str, routes: Routes,
                    wait_seconds: float = 1200.0) -> EndpointState:
        """Serve exactly the versions in `routes` with those percentages, then wait (up to
        `wait_seconds`) until the endpoint is no longer updating; the state it reached.
        Versions absent from `routes` stop being served."""

    @abstractmethod
    def wait_ready(self, endpoint: str, timeout: float = 1200.0) -> EndpointState:
        """Block until the endpoint reports no config update in progress."""

    @abstractmethod
    def health(self, endpoint: str, since: float) -> HealthReport:
        """Per-version request count, error count and latencies since `since` (epoch seconds)."""

    def recent_payloads(self, endpoint: str, limit: int) -> list[dict]:
        """Recent successful request bodies (for replay); backends without a payload log: []."""
        return []

    def set_shadow(self, endpoint: str, model_name: str, version: str | None) -> EndpointState:
        """Mirror every live request to `version` as well (its answers logged, never returned);
        None stops mirroring. Backends that cannot mirror (`mirrors` False) refuse."""
        raise ServingError(f"{self.name} serving cannot mirror traffic")

    def records(self, endpoint: str, since: float, limit: int) -> list[PayloadRecord]:
        """The payload log's records of `endpoint` since `since` (served and mirrored, oldest
        first, at most `limit`); backends without a payload log they can read: []."""
        return []
