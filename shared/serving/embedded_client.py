"""The rollout's adapter for the embedded serving server (shared.serving.embedded)."""

from __future__ import annotations

import time
from typing import Any

import requests

from shared.serving.base import (
    EndpointState,
    HealthReport,
    PayloadRecord,
    Routes,
    ServingBackend,
    ServingError,
    VersionHealth,
    check_routes,
)


class EmbeddedServing(ServingBackend):
    name = "embedded"
    mirrors = True

    def __init__(self, base_url: str, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict:
        """The reply's JSON body, for calls whose 404 is an error like any other."""
        body = self._call_or_missing(method, path, **kwargs)
        if body is None:
            raise ServingError(f"{method} {path}: 404 not found")
        return body

    def _call_or_missing(self, method: str, path: str, **kwargs: Any) -> dict | None:
        """The reply's JSON body; None when GET of an endpoint itself says it does not exist."""
        url = f"{self.base_url}/gatehouse/endpoints/{path}"
        try:
            reply = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ServingError(f"embedded serving at {self.base_url} unreachable: {exc}") from exc
        if reply.status_code == 404 and method == "GET" and "/" not in path:
            return None
        if reply.status_code >= 400:
            try:
                message = reply.json().get("message", reply.text)
            except ValueError:
                message = reply.text
            raise ServingError(f"{method} {path}: {reply.status_code} {message}")
        return reply.json()

    @staticmethod
    def _state(body: dict) -> EndpointState:
        return EndpointState(endpoint=body["name"], model_name=body.get("model_name"),
                             routes={str(k): int(v) for k, v in body["routes"].items()},
                             ready=bool(body.get("ready")), updating=bool(body.get("updating")),
                             config_updated_at=body.get("config_updated_at"),
                             shadow=body.get("shadow"))

    def state(self, endpoint: str) -> EndpointState | None:
        body = self._call_or_missing("GET", endpoint)
        return self._state(body) if body is not None else None

    def set_traffic(self, endpoint: str, model_name: str, routes: Routes,
                    wait_seconds: float = 1200.0) -> EndpointState:
        # The embedded server loads every version before it answers: ready on return.
        routes = check_routes(routes)
        body = self._call("PUT", f"{endpoint}/config",
                          json={"model_name": model_name, "routes": routes})
        return self._state(body)

    def wait_ready(self, endpoint: str, timeout: float = 1200.0) -> EndpointState:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(endpoint)
            if state is None:
                raise ServingError(f"serving endpoint {endpoint!r} does not exist")
            if state.ready and not state.updating:
                return state
            if time.monotonic() > deadline:
                raise ServingError(f"{endpoint} not ready after {timeout:.0f}s")
            time.sleep(0.5)

    def health(self, endpoint: str, since: float) -> HealthReport:
        body = self._call("GET", f"{endpoint}/health", params={"since": since})
        versions = {
            str(version): VersionHealth(
                str(version), int(figures["requests"]), int(figures["errors"]),
                tuple((float(ms), int(count)) for ms, count in figures["latencies_ms"]))
            for version, figures in body["versions"].items()}
        return HealthReport(endpoint=endpoint, window_start=body["window_start"],
                            window_end=body["window_end"], versions=versions, cumulative=True)

    def recent_payloads(self, endpoint: str, limit: int) -> list[dict]:
        if limit <= 0:
            return []
        body = self._call("GET", f"{endpoint}/payloads", params={"limit": limit})
        return [p["inputs"] for p in body["payloads"]]

    def set_shadow(self, endpoint: str, model_name: str, version: str | None) -> EndpointState:
        return self._state(self._call("PUT", f"{endpoint}/shadow",
                                      json={"model_name": model_name, "version": version}))

    def records(self, endpoint: str, since: float, limit: int) -> list[PayloadRecord]:
        body = self._call("GET", f"{endpoint}/records", params={"since": since, "limit": limit})
        return [PayloadRecord(**record) for record in body["records"]]

    def set_faults(self, endpoint: str, faults: dict[str, dict]) -> dict:
        """Fault injection for tests and the demo: {version: {error_rate, added_latency_ms}}."""
        return self._call("PUT", f"{endpoint}/faults", json=faults)
