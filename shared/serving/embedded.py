"""Embedded model serving: Databricks' invocation API on a local HTTP server.

    python -m shared.serving.embedded --port 8765 [--payload-log .gatehouse/payloads.sqlite]

- `POST /serving-endpoints/{name}/invocations`: the Databricks/MLflow scoring protocol
  (`dataframe_split`, `dataframe_records`, `instances`, `inputs`; CSV too) answered with
  `{"predictions": [...]}` by MLflow's own scoring code. The request goes to one served version,
  chosen by the endpoint's traffic weights from a hash of its request id (`X-Request-Id`, or a
  generated one), so the same id always reaches the same version.
- Every request is logged to the payload log (shared.serving.payload_log).
- Mirroring (the rollout's shadow step): with a shadow version set, each request is scored by
  it too, after the caller has its answer; the shadow's answer is logged (tagged shadow, same
  request id) and never returned.
- `/gatehouse/endpoints/...`: the config, health, payload and fault-injection API that
  shared.serving.embedded_client.EmbeddedServing (the rollout's adapter) speaks.

Models load from the MLflow registry (MLFLOW_TRACKING_URI) through shared.registry.client.Registry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from shared.foundation import runtime
from shared.foundation.storage import PROJECT_ROOT
from shared.serving.base import InvalidRoutes, Routes, check_routes
from shared.serving.payload_log import PayloadLog, PayloadRecord

log = logging.getLogger("gatehouse.serving")
DEFAULT_PAYLOG = PROJECT_ROOT / ".gatehouse" / "payloads.sqlite"
MAX_BODY = 16 * 1024 * 1024
MAX_RECORDS = 50_000


def _fraction(text: str) -> float:
    """A stable number in [0, 1) from a string."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:13], 16) / 16 ** 13


def _version_order(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def pick_version(routes: Routes, request_id: str) -> str:
    """The version that serves `request_id`: deterministic, in proportion to the weights."""
    point = _fraction(f"route|{request_id}") * 100
    cumulative = 0
    serving = [v for v in sorted(routes, key=_version_order) if routes[v] > 0]
    for version in serving:
        cumulative += routes[version]
        if point < cumulative:
            return version
    return serving[-1]


@dataclass(frozen=True)
class Fault:
    error_rate: float = 0.0
    added_latency_ms: float = 0.0

    def __post_init__(self):
        if not 0 <= self.error_rate <= 1:
            raise ValueError(f"error_rate {self.error_rate} is not in 0..1")
        if not 0 <= self.added_latency_ms <= 60_000:
            raise ValueError(f"added_latency_ms {self.added_latency_ms} is not in 0..60000")


@dataclass
class EndpointConfig:
    name: str
    model_name: str
    routes: Routes
    config_updated_at: float
    faults: dict[str, Fault] = field(default_factory=dict)
    shadow: str | None = None   # the version live requests are mirrored to

    def describe(self) -> dict:
        return {"name": self.name, "model_name": self.model_name, "routes": self.routes,
                "ready": True, "updating": False, "config_updated_at": self.config_updated_at,
                "shadow": self.shadow, "faults": {v: vars(f) for v, f in self.faults.items()}}


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "INVALID_PARAMETER_VALUE"):
        super().__init__(message)
        self.status, self.code = status, code


class ServingHost:
    """The server's state and logic, independent of HTTP."""

    def __init__(self, payload_log: str | Path, loader=None):
        self.payloads = PayloadLog(payload_log)
        self._db_path = Path(payload_log)
        self._loader = loader or self._registry_loader
        self._models: dict[tuple[str, str], object] = {}
        self._endpoints: dict[str, EndpointConfig] = {}
        self._lock = threading.RLock()
        with sqlite3.connect(self._db_path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS endpoints (name TEXT PRIMARY KEY, "
                       "model_name TEXT NOT NULL, routes TEXT NOT NULL, updated_at REAL NOT NULL)")
            if "shadow" not in {row[1] for row in db.execute("PRAGMA table_info(endpoints)")}:
                db.execute("ALTER TABLE endpoints ADD COLUMN shadow TEXT")
            saved = db.execute(
                "SELECT name, model_name, routes, updated_at, shadow FROM endpoints").fetchall()
        for name, model_name, routes, updated_at, shadow in saved:
            try:
                self.configure(name, model_name, json.loads(routes), now=updated_at)
                if shadow:
                    self.set_shadow(name, model_name, shadow)
            except BadRequest as exc:
                log.warning("endpoint %s not restored: %s", name, exc)

    @staticmethod
    def _registry_loader(model_name: str, version: str):
        from shared.registry.client import Registry

        return Registry().load_pyfunc(model_name, version)

    def _model(self, model_name: str, version: str):
        key = (model_name, version)
        with self._lock:
            if key not in self._models:
                try:
                    self._models[key] = self._loader(model_name, version)
                except Exception as exc:
                    raise BadRequest(f"cannot load {model_name} version {version}: {exc}") from None
            return self._models[key]

    def configure(self, name: str, model_name: object, routes: dict,
                  now: float | None = None) -> dict:
        """`model_name` as a request gave it: checked to be a non-empty string here."""
        if not model_name or not isinstance(model_name, str):
            raise BadRequest("model_name (the registered model) is required")
        try:
            routes = check_routes({str(k): v for k, v in dict(routes).items()})
        except (InvalidRoutes, TypeError, ValueError) as exc:
            raise BadRequest(str(exc)) from None
        for version in routes:  # load every version first: a failed load changes nothing
            self._model(model_name, version)
        with self._lock:
            previous = self._endpoints.get(name)
            same_model = previous is not None and previous.model_name == model_name
            faults = previous.faults if previous and same_model else {}
            config = EndpointConfig(name, model_name, routes, now or time.time(),
                                    {v: f for v, f in faults.items() if v in routes},
                                    previous.shadow if previous and same_model else None)
            self._endpoints[name] = config
            self._unload_unused()
        self._save(config)
        return config.describe()

    def _unload_unused(self) -> None:
        in_use = {(c.model_name, v) for c in self._endpoints.values()
                  for v in (*c.routes, *([c.shadow] if c.shadow else []))}
        for key in [k for k in self._models if k not in in_use]:
            del self._models[key]

    def _save(self, config: EndpointConfig) -> None:
        with sqlite3.connect(self._db_path) as db:
            db.execute("INSERT OR REPLACE INTO endpoints VALUES (?, ?, ?, ?, ?)",
                       (config.name, config.model_name, json.dumps(config.routes),
                        config.config_updated_at, config.shadow))

    def set_shadow(self, name: str, model_name: object, version: object) -> dict:
        """Mirror the endpoint's requests to `version` (None: stop mirroring)."""
        config = self.endpoint(name)
        if model_name != config.model_name:
            raise BadRequest(f"{name} serves {config.model_name}, not {model_name!r}")
        if version is not None and (not isinstance(version, (str, int)) or not str(version)):
            raise BadRequest("version is a model version, or null to stop mirroring")
        shadow = None if version is None else str(version)
        if shadow is not None:
            self._model(config.model_name, shadow)  # loaded before any request is mirrored
        with self._lock:
            config.shadow = shadow
            self._unload_unused()
        self._save(config)
        return config.describe()

    def endpoint(self, name: str) -> EndpointConfig:
        with self._lock:
            config = self._endpoints.get(name)
        if config is None:
            raise BadRequest(f"serving endpoint {name!r} does not exist", 404,
                             "RESOURCE_DOES_NOT_EXIST")
        return config

    def endpoints(self) -> list[dict]:
        with self._lock:
            return [c.describe() for c in self._endpoints.values()]

    def set_faults(self, name: str, body: dict) -> dict:
        config = self.endpoint(name)
        if not isinstance(body, dict):
            raise BadRequest("faults are a JSON object: {version: {error_rate, added_latency_ms}}")
        faults = {}
        for version, spec in body.items():
            if str(version) not in config.routes and str(version) != config.shadow:
                raise BadRequest(f"version {version} is not served (nor mirrored to) by {name}")
            if not isinstance(spec, dict) or set(spec) - {"error_rate", "added_latency_ms"}:
                raise BadRequest(f"version {version}: give error_rate and/or added_latency_ms")
            try:
                faults[str(version)] = Fault(float(spec.get("error_rate", 0)),
                                             float(spec.get("added_latency_ms", 0)))
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"version {version}: {exc}") from None
        with self._lock:
            config.faults = faults
        return config.describe()

    def invoke(self, name: str, body: bytes, content_type: str,
               request_id: str) -> tuple[int, str, str]:
        """Score one request and log it; returns (status, JSON body, served version)."""
        config = self.endpoint(name)
        version = pick_version(config.routes, request_id)
        status, response = self._score(config, version, body, content_type, request_id)
        return status, response, version

    def mirror(self, name: str, body: bytes, content_type: str, request_id: str,
               served: str) -> None:
        """Score a request the endpoint answered with its shadow version too, and log that
        answer as the shadow's (it goes to no caller)."""
        config = self.endpoint(name)
        if config.shadow is not None and config.shadow != served:
            self._score(config, config.shadow, body, content_type, request_id, shadow=True)

    def _score(self, config: EndpointConfig, version: str, body: bytes, content_type: str,
               request_id: str, shadow: bool = False) -> tuple[int, str]:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        started = time.perf_counter()
        fault = config.faults.get(version, Fault())
        outputs, error = None, None
        try:
            if fault.added_latency_ms:
                time.sleep(fault.added_latency_ms / 1000)
            if fault.error_rate and _fraction(f"fault|{request_id}") < fault.error_rate:
                raise BadRequest("injected fault", 500, "INTERNAL_ERROR")
            model = self._model(config.model_name, version)
            reply = invocations(body, content_type or "application/json", model,
                                model.metadata.get_input_schema())
            status, response = reply.status, reply.response
            if status == 200:
                outputs = response
            else:
                error = response
                response = json.dumps({"error_code": "BAD_REQUEST", "message": response})
        except BadRequest as exc:
            status, error = exc.status, str(exc)
            response = json.dumps({"error_code": exc.code, "message": error})
        except MlflowException as exc:
            status, error = exc.get_http_status_code(), exc.message
            response = json.dumps({"error_code": exc.error_code, "message": error})
        except Exception as exc:  # the model itself failed: a server error, logged like any other
            status, error = 500, f"{type(exc).__name__}: {exc}"
            response = json.dumps({"error_code": "INTERNAL_ERROR", "message": error})
        latency_ms = (time.perf_counter() - started) * 1000
        self.payloads.append(PayloadRecord(
            ts=time.time(), endpoint=config.name, request_id=request_id,
            model_name=config.model_name, version=version,
            inputs=body.decode("utf-8", errors="replace"), outputs=outputs,
            latency_ms=latency_ms, status=status, error=error, shadow=shadow))
        return status, response

    def health(self, name: str, since: float, until: float | None = None) -> dict:
        self.endpoint(name)
        report = self.payloads.health(name, since, until if until is not None else time.time())
        return {"endpoint": name, "window_start": report.window_start,
                "window_end": report.window_end, "cumulative": True,
                "versions": {v: {"requests": h.requests, "errors": h.errors,
                                 "latencies_ms": [list(pair) for pair in h.latencies_ms]}
                             for v, h in report.versions.items()}}

    def records(self, name: str, since: float, limit: int) -> list[dict]:
        """The log's rows of the endpoint since `since`, served and mirrored, oldest first."""
        self.endpoint(name)
        return [asdict(r) for r in self.payloads.records(endpoint=name, since=since, limit=limit,
                                                         shadow=None)]

    def recent_payloads(self, name: str, limit: int) -> list[dict]:
        self.endpoint(name)
        return [{"request_id": r.request_id, "ts": r.ts, "version": r.version,
                 "inputs": r.input_json()}
                for r in self.payloads.records(endpoint=name, ok_only=True, limit=limit,
                                               newest_first=True)]


ROUTES = [
    ("POST", re.compile(r"^/serving-endpoints/([^/]+)/invocations$"), "invocations"),
    ("GET", re.compile(r"^/gatehouse/endpoints$"), "list"),
    ("GET", re.compile(r"^/gatehouse/endpoints/([^/]+)$"), "get"),
    ("PUT", re.compile(r"^/gatehouse/endpoints/([^/]+)/config$"), "configure"),
    ("GET", re.compile(r"^/gatehouse/endpoints/([^/]+)/health$"), "health"),
    ("GET", re.compile(r"^/gatehouse/endpoints/([^/]+)/payloads$"), "payloads"),
    ("GET", re.compile(r"^/gatehouse/endpoints/([^/]+)/records$"), "records"),
    ("PUT", re.compile(r"^/gatehouse/endpoints/([^/]+)/shadow$"), "shadow"),
    ("PUT", re.compile(r"^/gatehouse/endpoints/([^/]+)/faults$"), "faults"),
    ("GET", re.compile(r"^/health$"), "alive"),
]


class EmbeddedHandler(BaseHTTPRequestHandler):
    """HTTP for a ServingHost: `_dispatch` finds the route, `_<action>` answers it."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms) and that would be measured as model latency.
    disable_nagle_algorithm = True
    host: ServingHost

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reply(self, status: int, body: str | dict, headers: dict | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise BadRequest(f"body of {length} bytes is over {MAX_BODY}", 413)
        return self.rfile.read(length) if length else b""

    def _json(self) -> dict:
        try:
            body = json.loads(self._body() or b"null")
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        matches = [(method, action, m) for method, pattern, action in ROUTES
                   if (m := pattern.match(split.path))]
        for method, action, m in matches:
            if method == self.command:
                args = [unquote(g) for g in m.groups()]
                try:
                    getattr(self, f"_{action}")(*args, query=query)
                except BadRequest as exc:
                    self._reply(exc.status, {"error_code": exc.code, "message": str(exc)})
                return
        self._body()  # read what was sent, so the connection stays usable
        if matches:
            self._reply(405, {"error_code": "BAD_REQUEST",
                              "message": f"{self.command} is not allowed on {split.path}"})
        else:
            self._reply(404, {"error_code": "ENDPOINT_NOT_FOUND",
                              "message": f"no such path: {split.path}"})

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def _invocations(self, name: str, query: dict) -> None:
        body = self._body()
        request_id = (self.headers.get("X-Request-Id") or "").strip() or str(uuid.uuid4())
        status, response, version = self.host.invoke(
            name, body, self.headers.get("Content-Type", "application/json"), request_id)
        self._reply(status, response, {"X-Request-Id": request_id,
                                       "X-Gatehouse-Served-Version": version})
        try:  # after the caller has its answer: nothing of it reaches the caller
            self.host.mirror(name, body, self.headers.get("Content-Type", "application/json"),
                             request_id, version)
        except Exception:
            log.exception("%s: mirroring request %s failed", name, request_id)

    def _list(self, query: dict) -> None:
        self._reply(200, {"endpoints": self.host.endpoints()})

    def _get(self, name: str, query: dict) -> None:
        self._reply(200, self.host.endpoint(name).describe())

    def _configure(self, name: str, query: dict) -> None:
        body = self._json()
        if not isinstance(body.get("routes"), dict):
            raise BadRequest("routes must be an object {version: percent}")
        self._reply(200, self.host.configure(name, body.get("model_name"), body["routes"]))

    def _health(self, name: str, query: dict) -> None:
        try:
            since = float(query.get("since", 0))
            until = float(query["until"]) if "until" in query else None
        except ValueError:
            raise BadRequest("since and until are epoch seconds") from None
        self._reply(200, self.host.health(name, since, until))

    def _payloads(self, name: str, query: dict) -> None:
        try:
            limit = int(query.get("limit", 50))
        except ValueError:
            raise BadRequest("limit is an integer") from None
        if not 0 <= limit <= 10_000:
            raise BadRequest("limit is 0..10000")
        self._reply(200, {"payloads": self.host.recent_payloads(name, limit)})

    def _records(self, name: str, query: dict) -> None:
        try:
            since, limit = float(query.get("since", 0)), int(query.get("limit", 10_000))
        except ValueError:
            raise BadRequest("since is epoch seconds, limit an integer") from None
        if not 0 <= limit <= MAX_RECORDS:
            raise BadRequest(f"limit is 0..{MAX_RECORDS}")
        self._reply(200, {"records": self.host.records(name, since, limit)})

    def _shadow(self, name: str, query: dict) -> None:
        body = self._json()
        self._reply(200, self.host.set_shadow(name, body.get("model_name"), body.get("version")))

    def _faults(self, name: str, query: dict) -> None:
        self._reply(200, self.host.set_faults(name, self._json()))

    def _alive(self, query: dict) -> None:
        self._reply(200, {"status": "ok", "endpoints": len(self.host.endpoints())})


def make_handler(host: ServingHost) -> type[EmbeddedHandler]:
    return type("Handler", (EmbeddedHandler,), {"host": host})


def serve(port: int, host: str = "127.0.0.1", payload_log: str | Path | None = None,
          loader=None) -> tuple[ThreadingHTTPServer, ServingHost]:
    """Start the server on a background thread; returns (server, host). Stop with shutdown()."""
    path = payload_log or runtime.settings().payload_log or DEFAULT_PAYLOG
    state = ServingHost(path, loader=loader)
    server = ThreadingHTTPServer((host, port), make_handler(state))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="embedded-serving", daemon=True).start()
    return server, state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--payload-log", default=None,
                        help="SQLite file (default: $GATEHOUSE_PAYLOAD_LOG or "
                             ".gatehouse/payloads.sqlite)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server, _ = serve(args.port, args.host, args.payload_log)
    print(f"Embedded serving on http://{args.host}:{server.server_port}", flush=True)
    stop = threading.Event()
    import signal

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
