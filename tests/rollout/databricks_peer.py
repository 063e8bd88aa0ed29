"""A local HTTP peer for the Databricks serving-endpoints calls Gatehouse uses, speaking the
documented wire format (REST API 2.0) and rejecting what Databricks rejects.

    GET  /api/2.0/serving-endpoints/{name}          ServingEndpointDetailed
    PUT  /api/2.0/serving-endpoints/{name}/config   served_entities + traffic_config
    GET  /api/2.0/serving-endpoints/{name}/metrics  Prometheus text

A config update stays IN_PROGRESS for `update_polls` GETs, then applies (or fails, when told
to). Faults can be injected per method and path: `inject("PUT", "/config", 409)`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.databricks_peer_base import ERROR_CODES, LoopbackPeer, Rejected

TOKEN = "dapi-peer-test-token"
ENTITY_FIELDS = {"name", "entity_name", "entity_version", "workload_size", "workload_type",
                 "scale_to_zero_enabled", "environment_vars", "instance_profile_arn",
                 "min_provisioned_throughput", "max_provisioned_throughput",
                 "burst_scaling_enabled", "min_provisioned_concurrency",
                 "max_provisioned_concurrency", "provisioned_model_units"}
ENTITY_NAME = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


class DatabricksPeer(LoopbackPeer):
    def __init__(self, update_polls: int = 2):
        self.update_polls = update_polls
        self.endpoints: dict[str, dict] = {}
        self.pending: dict[str, dict] = {}
        self.metrics: dict[str, str] = {}
        self.model_versions: set[tuple[str, str]] = set()
        self.faults: list[dict] = []
        self.requests: list[tuple[str, str, dict | None]] = []
        self.fail_next_update = False
        self._lock = threading.Lock()
        super().__init__()

    # -- test set-up --------------------------------------------------------------------------

    def register(self, model: str, *versions: str) -> None:
        self.model_versions.update((model, v) for v in versions)

    def create_endpoint(self, name: str, model: str, version: str,
                        workload_size: str = "Small", scale_to_zero: bool = False) -> None:
        entity = {"name": f"{model.split('.')[-1]}-{version}", "entity_name": model,
                  "entity_version": version, "workload_size": workload_size,
                  "scale_to_zero_enabled": scale_to_zero}
        with self._lock:
            self.endpoints[name] = self._detailed(name, [entity], [
                {"served_entity_name": entity["name"], "traffic_percentage": 100}], 1)

    def inject(self, method: str, path_contains: str, status: int, times: int = 1,
               retry_after: str | None = "0") -> None:
        with self._lock:
            self.faults.extend({"method": method, "path": path_contains, "status": status,
                                "retry_after": retry_after} for _ in range(times))

    def routes(self, name: str) -> dict[str, int]:
        config = self.endpoints[name]["config"]
        versions = {e["name"]: e["entity_version"] for e in config["served_entities"]}
        return {versions[r["served_entity_name"]]: r["traffic_percentage"]
                for r in config["traffic_config"]["routes"]}

    def calls(self, method: str, suffix: str = "") -> list:
        return [r for r in self.requests if r[0] == method and r[1].endswith(suffix)]

    # -- behaviour ----------------------------------------------------------------------------

    @staticmethod
    def _detailed(name: str, entities: list[dict], routes: list[dict], version: int) -> dict:
        now = int(time.time() * 1000)
        served = [{**e, "creator": "peer@example.com", "creation_timestamp": now,
                   "state": {"deployment": "DEPLOYMENT_READY", "deployment_state_message": ""}}
                  for e in entities]
        return {"name": name, "id": f"id-{name}", "creator": "peer@example.com",
                "creation_timestamp": now, "last_updated_timestamp": now,
                "permission_level": "CAN_MANAGE", "route_optimized": False,
                "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
                "config": {"served_entities": served, "traffic_config": {"routes": routes},
                           "config_version": version}}

    def _validate_config(self, name: str, body) -> tuple[list[dict], list[dict]]:
        if not isinstance(body, dict):
            raise Rejected(400, "request body must be a JSON object")
        unknown = set(body) - {"served_entities", "served_models", "traffic_config",
                               "auto_capture_config"}
        if unknown:
            raise Rejected(400, f"unknown fields: {sorted(unknown)}")
        entities = body.get("served_entities")
        if not isinstance(entities, list) or not entities:
            raise Rejected(400, "served_entities must be a non-empty list")
        if len(entities) > 15:
            raise Rejected(400, "at most 15 served entities")
        names = []
        for entity in entities:
            if not isinstance(entity, dict) or set(entity) - ENTITY_FIELDS:
                raise Rejected(400, f"served entity has unknown fields: {entity}")
            model, version = entity.get("entity_name"), entity.get("entity_version")
            if not isinstance(model, str) or not isinstance(version, str):
                raise Rejected(400, "entity_name and entity_version are required strings")
            if (model, version) not in self.model_versions:
                raise Rejected(404, f"model version {model}/{version} does not exist")
            entity.setdefault("name", f"{model.split('.')[-1]}-{version}")
            if not ENTITY_NAME.match(entity["name"]):
                raise Rejected(400, f"invalid served entity name {entity['name']!r}")
            if entity.get("workload_size", "Small") not in ("Small", "Medium", "Large"):
                raise Rejected(400, f"invalid workload_size {entity.get('workload_size')!r}")
            names.append(entity["name"])
        if len(set(names)) != len(names):
            raise Rejected(400, f"served entity names must be unique: {names}")
        routes = (body.get("traffic_config") or {}).get("routes")
        if routes is None:
            if len(entities) != 1:
                raise Rejected(400, "traffic_config is required with more than one entity")
            routes = [{"served_entity_name": names[0], "traffic_percentage": 100}]
        if not isinstance(routes, list) or not routes:
            raise Rejected(400, "traffic_config.routes must be a non-empty list")
        total = 0
        for route in routes:
            target = route.get("served_entity_name") or route.get("served_model_name")
            if target not in names:
                raise Rejected(400, f"route refers to unknown served entity {target!r}")
            percent = route.get("traffic_percentage")
            if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
                raise Rejected(400, f"traffic_percentage {percent!r} is not an integer 0..100")
            total += percent
        if total != 100:
            raise Rejected(400, f"traffic percentages sum to {total}, not 100")
        return entities, routes

    def _get(self, name: str) -> dict:
        if name not in self.endpoints:
            raise Rejected(404, f"serving endpoint {name} does not exist")
        current = self.endpoints[name]
        pending = self.pending.get(name)
        if pending is None:
            return current
        if pending["polls"] > 0:
            pending["polls"] -= 1
            return {**current, "state": {"ready": "READY", "config_update": "IN_PROGRESS"},
                    "pending_config": pending["config"]}
        del self.pending[name]
        if pending["fail"]:
            current = {**current, "state": {"ready": "READY", "config_update": "UPDATE_FAILED"}}
        else:
            config = pending["config"]
            current = self._detailed(name, config["served_entities"],
                                     config["traffic_config"]["routes"],
                                     current["config"]["config_version"] + 1)
        self.endpoints[name] = current
        return current

    def _put_config(self, name: str, body) -> dict:
        if name not in self.endpoints:
            raise Rejected(404, f"serving endpoint {name} does not exist")
        if name in self.pending:
            raise Rejected(409, f"endpoint {name} has an update in progress")
        entities, routes = self._validate_config(name, body)
        config = {"served_entities": entities, "traffic_config": {"routes": routes},
                  "config_version": self.endpoints[name]["config"]["config_version"] + 1,
                  "start_time": int(time.time() * 1000)}
        self.pending[name] = {"config": config, "polls": self.update_polls,
                              "fail": self.fail_next_update}
        self.fail_next_update = False
        return {**self.endpoints[name], "state": {"ready": "READY", "config_update": "IN_PROGRESS"},
                "pending_config": config}

    def _handler(self):
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: str, content_type: str, headers: dict) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                self._send(status, json.dumps({"error_code": ERROR_CODES.get(status, "UNKNOWN"),
                                               "message": message}),
                           "application/json", headers or {})

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                body = None
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return self._error(400, "malformed JSON")
                with peer._lock:
                    peer.requests.append((self.command, path, body))
                    fault = next((f for f in peer.faults if f["method"] == self.command
                                  and f["path"] in path), None)
                    if fault is not None:
                        peer.faults.remove(fault)
                if path == "/.well-known/databricks-config":
                    return self._error(404, "not here")
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._error(401, "invalid access token")
                if fault is not None:
                    headers = {"Retry-After": fault["retry_after"]} if fault["retry_after"] else {}
                    return self._error(fault["status"], "injected", headers)
                m = re.match(r"^/api/2\.0/serving-endpoints/([^/]+)(/config|/metrics)?$", path)
                if not m:
                    return self._error(404, f"no such API: {path}")
                name, tail = m.group(1), m.group(2)
                try:
                    with peer._lock:
                        if self.command == "GET" and tail is None:
                            reply = peer._get(name)
                        elif self.command == "PUT" and tail == "/config":
                            reply = peer._put_config(name, body)
                        elif self.command == "GET" and tail == "/metrics":
                            peer._get(name)
                            return self._send(200, peer.metrics.get(name, ""),
                                              "text/plain; version=0.0.4", {})
                        else:
                            return self._error(405, f"{self.command} {path} is not supported")
                except Rejected as exc:
                    return self._error(exc.status, str(exc))
                return self._send(200, json.dumps(reply), "application/json", {})

            do_GET = do_PUT = do_POST = do_DELETE = _serve

        return Handler
