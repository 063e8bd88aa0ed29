"""A local stand-in for the Azure Functions host (`func start`) for a Python v2 `FunctionApp`.

    python -m shared.dev.local_host [--app function_app:app] [--app-root DIR] [--port 7071]
                                [--host 127.0.0.1]

Functions and bindings come from the FunctionApp itself.  Supported: HTTP triggers, queue triggers
(host.json `extensions.queues`: batching, visibility timeout, poison queue, encoding, backoff),
timer triggers (NCRONTAB or TimeSpan, runOnStartup) and queue output bindings (named or `$return`).
Timer schedules are evaluated in UTC, as on Linux plans.

A dequeued message stays invisible while its function runs under a lease of one functionTimeout
(at most 10 minutes), renewed at half its length, as the WebJobs queue listener does: after a
crash of the host, the message reappears within one function timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import enum
import importlib
import inspect
import json
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from shared.dev import host_keys
from shared.dev.host_keys import HostKeys
from shared.dev.ncrontab import Schedule
from shared.foundation.logs import configure_logging
from shared.foundation.settings import Settings
from shared.foundation.storage import (
    SCRIPT_ROOT_SETTING,
    STORAGE_SETTING,
    Azurite,
    QueueOptions,
    decode_queue_message,
    encode_queue_message,
    function_timeout,
    load_host_json,
    storage_connection_string,
)

log = logging.getLogger("gatehouse.host")
MIN_POLL = 0.1              # seconds; queue polling backs off from here to maxPollingInterval
RECEIVE_VISIBILITY = 600    # at most, the host leases a dequeued message for 10 minutes
SHUTDOWN_GRACE = 30.0       # seconds stop() waits for in-flight invocations
REQUEST_TIMEOUT = 30.0      # seconds a connection may sit idle, or a body take to arrive
MAX_LINE = 8192             # bytes of a chunk-size or trailer line
MAX_TRAILERS = 100          # trailer lines after a chunked body
LINGER_SECONDS = 5.0        # after refusing a body unread: how long to read (and drop) the rest
LINGER_BYTES = 64 << 20     # ... and how much of it, so the client sees the answer, not a reset
MAX_BLANK_LINES = 8         # empty lines skipped before a request line
CONSTRAINTS = {"int": r"-?\d+", "long": r"-?\d+", "bool": r"(?:true|false)", "alpha": r"[A-Za-z]+",
               "float": r"-?\d+(?:\.\d+)?", "double": r"-?\d+(?:\.\d+)?",
               "decimal": r"-?\d+(?:\.\d+)?", "guid": r"\{?[0-9A-Fa-f]{8}(?:-?[0-9A-Fa-f]{4}){3}"
                                                      r"-?[0-9A-Fa-f]{12}\}?"}


def _plain(value):
    """Binding dicts hold enums (BindingDirection.IN, HttpMethod.GET, ...): make them plain."""
    if isinstance(value, enum.Enum):
        return value.value if isinstance(value.value, str) else value.name.lower()
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _setting(text):
    """Resolve `%AppSetting%` placeholders in binding expressions, as the host does."""
    if not isinstance(text, str):
        return text
    return re.sub(r"%([^%]+)%", lambda m: os.environ.get(m.group(1), m.group(0)), text)


def _connection_string(name: str | None) -> str:
    name = name or STORAGE_SETTING
    value = os.environ.get(name) or os.environ.get(f"AzureWebJobs{name}")
    if not value:
        raise RuntimeError(f"connection setting '{name}' is not set")
    return storage_connection_string(value)


def _is_disabled(function_name: str) -> bool:
    """The Functions host's switch: app setting `AzureWebJobs.<name>.Disabled` = true or 1."""
    value = os.environ.get(f"AzureWebJobs.{function_name}.Disabled", "")
    return value.strip().lower() in ("true", "1")


class _Out(func.Out):
    def __init__(self):
        self._value = None

    def set(self, val) -> None:
        self._value = val

    def get(self):
        return self._value


class _Context:
    """What the Python worker passes to a parameter named `context`."""

    def __init__(self, invocation_id: str, function_name: str, function_directory: str):
        self.invocation_id, self.function_name = invocation_id, function_name
        self.function_directory = function_directory
        self.thread_local_storage = threading.local()
        self.trace_context = self.retry_context = None


class Function:
    """One function of the app: its name, user callable, trigger and bindings (as plain dicts)."""

    def __init__(self, f):
        self.name = f.get_function_name()
        self.func = f.get_user_function()
        self.trigger = {k: _plain(v) for k, v in f.get_trigger().get_dict_repr().items()}
        self.type = self.trigger.get("type")
        bindings = [{k: _plain(v) for k, v in b.get_dict_repr().items()} for b in f.get_bindings()]
        self.outputs = [b for b in bindings if b.get("direction") == "out"]
        self.inputs = [b for b in bindings
                       if b.get("direction") != "out" and b["name"] != self.trigger["name"]]
        self.wants_context = "context" in inspect.signature(self.func).parameters


class Route:
    """An HTTP trigger's ASP.NET-style route template (`items/{id:int}`, `{name?}`, `{*rest}`)."""

    def __init__(self, fn: Function, prefix: str):
        self.fn = fn
        self.template = "/".join(p for p in (prefix.strip("/"),
                                              (fn.trigger.get("route") or fn.name).strip("/")) if p)
        methods = fn.trigger.get("methods")
        self.methods = {m.upper() for m in methods} if methods else None
        self.auth_level = str(fn.trigger.get("authLevel") or host_keys.FUNCTION).lower()
        self.names: list[str] = []
        self.defaults: dict[str, str] = {}
        self.rank: list[int] = []
        regex = ""
        for segment in self.template.split("/") if self.template else []:
            params = list(re.finditer(r"\{([^{}]+)\}", segment))
            if not params:
                regex += "/" + re.escape(segment)
                self.rank.append(0)
                continue
            piece, pos, optional = "", 0, False
            for m in params:
                piece += re.escape(segment[pos:m.start()])
                pos = m.end()
                pattern, optional, rank = self._param(m.group(1))
                piece += f"(?P<p{len(self.names) - 1}>{pattern})"
                self.rank.append(rank)
            piece += re.escape(segment[pos:])
            whole = len(params) == 1 and params[0].span() == (0, len(segment))
            regex += f"(?:/{piece})?" if whole and optional else "/" + piece
        self.regex = re.compile(f"^{regex}/?$", re.IGNORECASE)

    def _param(self, inner: str) -> tuple[str, bool, int]:
        catch_all = inner.startswith("*")
        inner, has_default, default = inner.lstrip("*").partition("=")
        optional = catch_all or bool(has_default) or inner.endswith("?")
        name, _, constraints = inner.rstrip("?").partition(":")
        self.names.append(name.strip())
        if has_default:
            self.defaults[name.strip()] = default
        pattern, rank = (".*", 4) if catch_all else ("[^/]+", 3 if optional else 2)
        for constraint in filter(None, constraints.split(":")):
            if constraint.startswith("regex(") and constraint.endswith(")"):
                pattern, rank = f"(?:{constraint[6:-1].lstrip('^').rstrip('$')})", 1
            elif constraint.lower() in CONSTRAINTS:
                pattern, rank = CONSTRAINTS[constraint.lower()], 1
        return pattern, optional, rank

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if m is None:
            return None
        values = {}
        for i, name in enumerate(self.names):
            value = m.group(f"p{i}")
            if value is None:
                value = self.defaults.get(name)
            if value is not None:
                values[name] = unquote(value)
        return values


def message_lease_seconds(host_json: dict) -> int:
    """How long a dequeued message stays invisible while its function runs (renewed at half of
    it): one functionTimeout, at most RECEIVE_VISIBILITY."""
    timeout = function_timeout(host_json)
    return max(1, math.ceil(min(timeout or RECEIVE_VISIBILITY, RECEIVE_VISIBILITY)))


class _VisibilityLease:
    """Keeps a dequeued message invisible while the block runs: renews its visibility at half
    the lease from a daemon thread, keeping the pop receipt each renewal hands back."""

    def __init__(self, client, message, seconds: int):
        self.client, self.message_id, self.seconds = client, message.id, seconds
        self.pop_receipt: str = message.pop_receipt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name=f"visibility-{message.id}")

    def __enter__(self) -> _VisibilityLease:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 2):
            try:
                renewed = self.client.update_message(self.message_id, self.pop_receipt,
                                                     visibility_timeout=self.seconds)
            except Exception as exc:
                log.warning("Could not renew the lease on message %s: %s", self.message_id, exc)
                continue
            self.pop_receipt = renewed.pop_receipt


class LocalHost:
    """Runs the app's functions: HTTP server, queue pollers and timers on background threads."""

    def __init__(self, app, app_root, port: int = 7071, host: str = "127.0.0.1",
                 keys: HostKeys | None = None, max_body_bytes: int | None = None,
                 request_timeout: float = REQUEST_TIMEOUT):
        settings = Settings.from_env()
        self.app_root = Path(app_root).resolve()
        self.host, self.port = host, port
        self.max_body_bytes = max_body_bytes or settings.max_body_bytes
        self.request_timeout = request_timeout
        host_json = load_host_json(str(self.app_root))
        self.options = QueueOptions.from_host_json(host_json)
        self.route_prefix = str(host_json.get("extensions", {}).get("http", {})
                                .get("routePrefix", "api"))
        if getattr(app, "functions_bindings", None):
            app.functions_bindings = None  # azure-functions 1.x refuses a second get_functions()
        every = [Function(f) for f in app.get_functions()]
        self.disabled = [fn.name for fn in every if _is_disabled(fn.name)]
        self.functions = [fn for fn in every if fn.name not in self.disabled]
        self.routes = sorted((Route(fn, self.route_prefix) for fn in self.functions
                              if fn.type == "httpTrigger"),
                             key=lambda r: r.rank)
        # Keys only where a route needs one: an all-anonymous app writes no keys file.
        self.keys = keys
        if keys is None and any(r.auth_level != host_keys.ANONYMOUS for r in self.routes):
            self.keys = host_keys.resolve(self.app_root, settings.function_key,
                                          settings.master_key)
        self._stopping = threading.Event()
        self._busy = 0
        self._idle = threading.Condition()
        self._clients: dict = {}
        self._clients_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pools: list[ThreadPoolExecutor] = []
        self._server: ThreadingHTTPServer | None = None
        self._azurite: Azurite | None = None

    @classmethod
    def from_app_root(cls, app_root=".", app_spec: str = "function_app:app", port: int = 7071,
                      host: str = "127.0.0.1") -> LocalHost:
        """Like `func start`: load local.settings.json, provide storage, import the app."""
        app_root = Path(app_root).resolve()
        os.environ[SCRIPT_ROOT_SETTING] = str(app_root)  # as the Functions host sets it
        load_local_settings(app_root)
        os.environ[SCRIPT_ROOT_SETTING] = str(app_root)  # as the Functions host sets it
        azurite = ensure_storage(app_root)
        try:
            local = cls(load_app(app_spec, app_root), app_root, port, host)
        except BaseException:
            if azurite:
                azurite.stop()
            raise
        local._azurite = azurite
        return local

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalHost:
        handler = type("Handler", (_Handler,), {"local_host": self,
                                                "timeout": self.request_timeout})
        self._server = _Server((self.host, self.port), handler)
        self.port = self._server.server_address[1]
        lines, timers = [], []
        for fn in self.functions:
            if fn.type == "httpTrigger":
                route = next(r for r in self.routes if r.fn is fn)
                methods = ",".join(sorted(route.methods)) if route.methods else "*"
                needs = {host_keys.FUNCTION: " (function key)",
                         host_keys.ADMIN: " (master key)"}.get(route.auth_level, "")
                lines.append(f"{fn.name}: [{methods}] {self.url}/{route.template}{needs}")
            elif fn.type == "queueTrigger":
                queue = _setting(fn.trigger["queueName"])
                try:
                    client = self._queue_client(fn.trigger.get("connection"), queue)
                except Exception as exc:
                    log.error("%s: cannot listen on queue '%s': %s", fn.name, queue, exc)
                    continue
                pool = ThreadPoolExecutor(self.options.batch_size, f"queue-{fn.name}")
                self._pools.append(pool)
                self._spawn(self._poll_queue, fn, client, queue, pool)
                lines.append(f"{fn.name}: queueTrigger (queue: {queue})")
            elif fn.type == "timerTrigger":
                try:
                    schedule = Schedule(_setting(fn.trigger["schedule"]))
                except ValueError as exc:
                    log.error("%s: %s", fn.name, exc)
                    continue
                timers.append((fn, schedule))
                lines.append(f"{fn.name}: timerTrigger (schedule: {schedule.expression})")
            else:
                lines.append(f"{fn.name}: {fn.type} (not supported by the local host; not running)")
            for b in fn.inputs + fn.outputs:
                if b.get("type") not in ("queue", "http"):
                    log.warning("%s: binding '%s' of type %s is not supported locally (gets None)",
                                fn.name, b["name"], b.get("type"))
        lines += [f"{name}: disabled (AzureWebJobs.{name}.Disabled)" for name in self.disabled]
        if self.keys is not None:
            lines.append(f"Function key: {self.keys.function} (header {host_keys.KEY_HEADER} or "
                         f"?{host_keys.KEY_PARAMETER}=; {self.keys.origin})")
            if any(r.auth_level == host_keys.ADMIN for r in self.routes):
                lines.append(f"Master key: {self.keys.master}")
        self._spawn(self._server.serve_forever, 0.2)
        for line in lines:
            log.info("%s", line)
        log.info("Host started on %s", self.url)
        for fn, schedule in timers:
            self._spawn(self._run_timer, fn, schedule)
        return self

    def stop(self, timeout: float = SHUTDOWN_GRACE) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        log.info("Stopping host")
        deadline = time.monotonic() + timeout
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0,
                                       max(0.0, deadline - time.monotonic())):
                log.warning("%d invocation(s) still running after %.0fs; not waiting for them",
                            self._busy, timeout)
        for pool in self._pools:
            pool.shutdown(wait=False)
        if self._azurite:
            self._azurite.stop()
        log.info("Host stopped")

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _busy_add(self, delta: int) -> None:
        with self._idle:
            self._busy += delta
            self._idle.notify_all()

    # -- invoking ----------------------------------------------------------------------------

    def _invoke(self, fn: Function, trigger_value, reason: str) -> tuple[bool, object]:
        """Call the function; flush its output bindings. Returns (succeeded, HTTP output)."""
        invocation_id = str(uuid.uuid4())
        outs = {b["name"]: _Out() for b in fn.outputs if b["name"] != "$return"}
        kwargs = {fn.trigger["name"]: trigger_value, **outs, **{b["name"]: None for b in fn.inputs}}
        if fn.wants_context:
            kwargs["context"] = _Context(invocation_id, fn.name, str(self.app_root))
        self._busy_add(1)
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", fn.name, reason, invocation_id)
        started = time.monotonic()
        try:
            result = fn.func(**kwargs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            http_out = result
            for b in fn.outputs:
                value = result if b["name"] == "$return" else outs[b["name"]].get()
                if b.get("type") == "queue":
                    self._enqueue(b, value)
                elif b.get("type") == "http":
                    http_out = value
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)", fn.name,
                          invocation_id, (time.monotonic() - started) * 1000)
            return False, None
        finally:
            self._busy_add(-1)
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)", fn.name,
                 invocation_id, (time.monotonic() - started) * 1000)
        return True, http_out

    # -- queues ------------------------------------------------------------------------------

    def _queue_client(self, connection: str | None, queue: str):
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        key = (_connection_string(connection), queue)
        with self._clients_lock:
            if key not in self._clients:
                client = QueueClient.from_connection_string(key[0], queue)
                try:
                    client.create_queue()
                except ResourceExistsError:
                    pass
                self._clients[key] = client
            return self._clients[key]

    def _enqueue(self, binding: dict, value) -> None:
        if value is None:
            return
        contents = []
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if hasattr(item, "get_body"):
                item = item.get_body()
            encoding = self.options.message_encoding
            if isinstance(item, (bytes, bytearray)):
                contents.append(base64.b64encode(item).decode("ascii") if encoding == "base64"
                                else bytes(item).decode("utf-8"))
            elif isinstance(item, str):
                contents.append(encode_queue_message(item, encoding))
            else:
                raise TypeError(f"queue output '{binding['name']}' takes str, bytes or a list of "
                                f"them, not {type(item).__name__}")
        client = self._queue_client(binding.get("connection"), _setting(binding["queueName"]))
        for content in contents:
            client.send_message(content)

    def _poll_queue(self, fn: Function, client, queue: str, pool: ThreadPoolExecutor) -> None:
        opts = self.options
        lease = message_lease_seconds(load_host_json(str(self.app_root)))
        pending = [0]
        cond = threading.Condition()

        def done(_future):
            with cond:
                pending[0] -= 1
                cond.notify_all()
            self._busy_add(-1)

        fast = min(MIN_POLL, opts.max_polling_interval)
        delay = fast
        batch = max(1, min(opts.batch_size, 32))
        while not self._stopping.is_set():
            with cond:
                if pending[0] > opts.batch_threshold:
                    cond.wait(0.2)
                    continue
            try:
                messages = list(client.receive_messages(messages_per_page=batch, max_messages=batch,
                                                        visibility_timeout=lease))
            except Exception as exc:
                log.warning("Polling queue '%s' failed: %s", queue, exc)
                messages = []
            for message in messages:
                with cond:
                    pending[0] += 1
                self._busy_add(1)
                future = pool.submit(self._process_message, fn, client, queue, message, lease)
                future.add_done_callback(done)
            if messages:
                delay = fast
                continue
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, opts.max_polling_interval)

    def _process_message(self, fn: Function, client, queue: str, m, lease: int) -> None:
        opts = self.options
        try:
            if self._stopping.is_set():  # dequeued but not started before shutdown: hand it back
                client.update_message(m.id, m.pop_receipt, visibility_timeout=0)
                return
            try:
                body = decode_queue_message(m.content or "", opts.message_encoding)
            except ValueError as exc:
                log.error("Message %s on queue '%s' is not valid base64 (%s); moving it to "
                          "'%s-poison'", m.id, queue, exc, queue)
                return self._poison(fn, client, queue, m, m.pop_receipt)
            if m.dequeue_count > opts.max_dequeue_count:
                return self._poison(fn, client, queue, m, m.pop_receipt)
            message = QueueMessage(id=m.id, body=body, dequeue_count=m.dequeue_count,
                                   insertion_time=m.inserted_on, expiration_time=m.expires_on,
                                   time_next_visible=m.next_visible_on, pop_receipt=m.pop_receipt)
            with _VisibilityLease(client, m, lease) as held:
                ok, _ = self._invoke(fn, message, f"New queue message detected on '{queue}'.")
            if ok:
                client.delete_message(m.id, held.pop_receipt)
            elif m.dequeue_count >= opts.max_dequeue_count:
                self._poison(fn, client, queue, m, held.pop_receipt)
            else:
                client.update_message(m.id, held.pop_receipt,
                                      visibility_timeout=int(round(opts.visibility_timeout)))
        except Exception:
            log.exception("Could not complete message %s on queue '%s'", m.id, queue)

    def _poison(self, fn: Function, client, queue: str, m, pop_receipt: str) -> None:
        poison = f"{queue}-poison"
        log.warning("Message %s has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
                    m.id, self.options.max_dequeue_count, poison)
        self._queue_client(fn.trigger.get("connection"), poison).send_message(m.content or "")
        client.delete_message(m.id, pop_receipt)
        log.info("Function '%s' failed on message %s %d time(s); `gatehouse poison list` shows "
                 "the last error", fn.name, m.id, m.dequeue_count)

    # -- timers ------------------------------------------------------------------------------

    def _run_timer(self, fn: Function, schedule: Schedule) -> None:
        def fire(past_due: bool, last: datetime | None):
            now = datetime.now(UTC)
            status = {"Last": (last or now).isoformat(), "LastUpdated": now.isoformat(),
                      "Next": schedule.next_fire(now).isoformat()}
            timer = TimerRequest(past_due=past_due, schedule_status=status,
                                 schedule={"AdjustForDST": True})
            self._invoke(fn, timer, f"Timer fired at {now.isoformat()}")

        if fn.trigger.get("runOnStartup"):
            fire(False, None)
        previous = datetime.now(UTC)
        while not self._stopping.is_set():
            due = schedule.next_fire(previous)
            delay = (due - datetime.now(UTC)).total_seconds()
            if delay > 0:
                if self._stopping.wait(min(delay, 60)):
                    return
                continue
            fire(-delay > 1.0, previous)
            previous = due if -delay <= 1.0 else datetime.now(UTC)

    # -- HTTP --------------------------------------------------------------------------------

    def _serve_http(self, h: _Handler) -> None:
        try:
            body = _read_body(h, self.max_body_bytes)
            split = _request_target(h.path)
        except _Refusal as refusal:
            return refusal.send(h)
        if self._stopping.is_set():
            return _respond(h, 503, [], b"", close=True)
        allowed: set[str] = set()
        for route in self.routes:
            route_params = route.match(split.path)
            if route_params is None:
                continue
            if route.methods is not None and h.command not in route.methods:
                allowed |= route.methods
                continue
            headers: dict[str, str] = {}
            for key, value in h.headers.items():
                key = key.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            params: dict[str, str] = {}
            for key, value in parse_qsl(split.query, keep_blank_values=True):
                params[key] = f"{params[key]},{value}" if key in params else value
            if self.keys is not None and not self.keys.admits(
                    route.auth_level, host_keys.presented_key(headers, params)):
                return _respond_json(h, 401, {"error": HostKeys.refusal(route.auth_level)})
            url = f"http://{h.headers.get('Host') or f'{self.host}:{self.port}'}{h.path}"
            request = func.HttpRequest(h.command, url, headers=headers, params=params,
                                       route_params=route_params, body=body)
            ok, response = self._invoke(route.fn, request, "This function was programmatically "
                                                           "called via the host APIs.")
            status, body_out = 500, b""
            headers_out: list[tuple[str, str]] = []
            try:
                if ok:
                    status, headers_out, body_out = _convert_response(response)
            except Exception:
                log.exception("Function '%s' returned an invalid HTTP response", route.fn.name)
            return _respond(h, status, headers_out, body_out)
        if allowed:
            return _respond_json(h, 405, {"error": "Method Not Allowed", "method": h.command,
                                          "allowed": sorted(allowed)},
                                 [("Allow", ", ".join(sorted(allowed)))])
        _respond_json(h, 404, {"error": "Not Found",
                               "message": f"no function matches {h.command} {split.path[:200]}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up shutdown


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GatehouseLocalHost/1.0"
    timeout = REQUEST_TIMEOUT  # idle keep-alive connections close; a stalled body gets a 408
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    local_host: LocalHost
    raw_requestline: bytes
    linger = False  # a body was refused unread: drain it before closing (see finish)

    def _handle(self):
        self.local_host._serve_http(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def __getattr__(self, name: str):
        # Any other method (PROPFIND, get, ...) is routed too: 404 or 405 as Azure answers,
        # not the stdlib's 501.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def parse_request(self) -> bool:
        line = self.raw_requestline
        for _ in range(MAX_BLANK_LINES):  # RFC 9112 2.2: blank lines before a request are ignored
            if line not in (b"\r\n", b"\n"):
                break
            line = self.raw_requestline = self.rfile.readline(65537)
        if line and not str(line, "iso-8859-1").split():
            self.command, self.requestline, self.request_version = "", "", "HTTP/1.0"
            self.send_error(HTTPStatus.BAD_REQUEST, "the request line is blank")
            return False
        if not super().parse_request():
            return False
        if self.request_version == "HTTP/0.9":  # `GET /path` without a version
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not served")
            return False
        return True

    def handle_expect_100(self) -> bool:
        """Refuse a body by its declared size before the client is told to send it."""
        try:
            _declared_length(self, self.local_host.max_body_bytes)
        except _Refusal as refusal:
            refusal.send(self)
            return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The stdlib's answer to framing it cannot parse (request line, headers, version):
        the client sent it, so a 4xx (never its 501/505), in JSON like every other answer."""
        if self.request_version == "HTTP/0.9":  # the version was not read: answer in 1.1 anyway
            self.request_version = "HTTP/1.0"
        status = code if code < 500 else HTTPStatus.BAD_REQUEST
        reason = message or HTTPStatus(code).phrase
        _respond_json(self, status, {"error": f"malformed HTTP request: {reason}"}, close=True)

    def finish(self) -> None:
        super().finish()
        if self.linger:
            _drain(self.connection)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)


class _Refusal(Exception):
    """A request the host answers itself, before any function: bad framing or too large."""

    def __init__(self, status: int, message: str, unread_body: bool = False):
        super().__init__(message)
        self.status, self.message, self.unread_body = status, message, unread_body

    def send(self, h: _Handler) -> None:
        h.linger = self.unread_body
        _respond_json(h, self.status, {"error": self.message}, close=True)


def _request_target(path: str):
    try:
        return urlsplit(path)
    except ValueError:
        raise _Refusal(400, f"malformed request target {path[:200]!r}") from None


def _too_large(size: int | str, limit: int) -> _Refusal:
    return _Refusal(413, f"request body of {size} bytes is over the limit of {limit} bytes "
                         f"(GATEHOUSE_MAX_BODY_BYTES)", unread_body=True)


def _declared_length(h: BaseHTTPRequestHandler, limit: int) -> int | None:
    """The body's declared length (None: chunked), checked before a byte of it is read:
    _Refusal 400 for framing that cannot be trusted, 413 for more than `limit` bytes."""
    codings = [c.strip().lower() for value in h.headers.get_all("Transfer-Encoding") or []
               for c in value.split(",") if c.strip()]
    lengths = {value.strip() for value in h.headers.get_all("Content-Length") or []}
    if codings:
        if codings != ["chunked"]:
            raise _Refusal(400, f"Transfer-Encoding {', '.join(codings)!r} is not supported; "
                                f"send chunked or a Content-Length", unread_body=True)
        if lengths:
            raise _Refusal(400, "a request has Transfer-Encoding or Content-Length, not both",
                           unread_body=True)
        return None
    if not lengths:
        return 0
    if len(lengths) > 1:
        raise _Refusal(400, "Content-Length headers disagree", unread_body=True)
    text = lengths.pop()
    if not (text.isascii() and text.isdigit()):
        raise _Refusal(400, f"Content-Length {text[:40]!r} is not a number of bytes",
                       unread_body=True)
    if len(text) > 18 or int(text) > limit:
        raise _too_large(text if len(text) <= 24 else f"a {len(text)}-digit number of", limit)
    return int(text)


def _read_body(h: BaseHTTPRequestHandler, limit: int) -> bytes:
    """The request body, at most `limit` bytes; _Refusal for framing that cannot be trusted (400),
    a larger body (413), or a body that stops coming before it is complete (408)."""
    try:
        length = _declared_length(h, limit)
        if length is None:
            return _read_chunked(h, limit)
        body = h.rfile.read(length) if length else b""
    except TimeoutError:
        raise _Refusal(408, f"the request body did not arrive within {h.timeout:g} s") from None
    if len(body) < length:
        raise _Refusal(400, f"the body ended after {len(body)} of the {length} bytes its "
                            f"Content-Length declares")
    return body


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


def _read_chunked(h: BaseHTTPRequestHandler, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        line = h.rfile.readline(MAX_LINE + 1)
        size_text = line.split(b";")[0].strip()
        if not line.endswith(b"\n") or not _CHUNK_SIZE.fullmatch(size_text):
            raise _Refusal(400, "malformed chunked body: a chunk size line is not hexadecimal",
                           unread_body=True)
        size = int(size_text, 16)
        if size == 0:
            _skip_trailers(h)
            return b"".join(chunks)
        total += size
        if total > limit:
            raise _too_large(f"more than {limit}", limit)
        chunk = h.rfile.read(size)
        if len(chunk) < size or h.rfile.readline(MAX_LINE + 1) not in (b"\r\n", b"\n"):
            raise _Refusal(400, "malformed chunked body: a chunk is cut short or not followed "
                                "by CRLF", unread_body=True)
        chunks.append(chunk)


def _skip_trailers(h: BaseHTTPRequestHandler) -> None:
    for _ in range(MAX_TRAILERS):
        line = h.rfile.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n", b""):
            return
    raise _Refusal(400, f"malformed chunked body: more than {MAX_TRAILERS} trailer lines",
                   unread_body=True)


def _drain(connection: socket.socket) -> None:
    """Close gently after refusing a body unread: stop writing, then read (and drop) what the
    client is still sending for a moment, so it reads our answer instead of a reset."""
    try:
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(1.0)
        deadline, drained = time.monotonic() + LINGER_SECONDS, 0
        while drained < LINGER_BYTES and time.monotonic() < deadline:
            data = connection.recv(65536)
            if not data:
                return
            drained += len(data)
    except OSError:
        pass


def _convert_response(value) -> tuple[int, list[tuple[str, str]], bytes]:
    if value is None:
        return 204, [], b""
    if isinstance(value, (str, bytes)):
        value = func.HttpResponse(value)
    if not (hasattr(value, "status_code") and hasattr(value, "get_body")):
        raise TypeError(f"expected HttpResponse, str or bytes, got {type(value).__name__}")
    headers = [(k, str(v)) for k, v in value.headers.items()]
    if not any(k.lower() == "content-type" for k, _ in headers):
        mimetype = value.mimetype or "text/plain"
        headers.append(("Content-Type", f"{mimetype}; charset={value.charset}"
                        if mimetype.startswith("text/") else mimetype))
    return int(value.status_code), headers, value.get_body() or b""


def _respond_json(h: BaseHTTPRequestHandler, status: int, payload: dict, headers=(), close=False):
    _respond(h, status, [("Content-Type", "application/json"), *headers],
             json.dumps(payload).encode(), close)


def _respond(h: BaseHTTPRequestHandler, status: int, headers, body: bytes, close=False) -> None:
    try:
        h.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date",
                                   "server"):
                h.send_header(key, value)
        bodyless = status in (204, 304) or status < 200
        if not bodyless:
            h.send_header("Content-Length", str(len(body)))
        if close:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        if not bodyless and h.command != "HEAD":
            h.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        h.close_connection = True


# -- setting up like `func start` ----------------------------------------------------------------

def load_local_settings(app_root) -> dict:
    """Put local.settings.json `Values` into os.environ (variables already set win)."""
    path = Path(app_root) / "local.settings.json"
    if not path.exists():
        return {}
    settings = json.loads(path.read_text())
    for key, value in (settings.get("Values") or {}).items():
        os.environ.setdefault(key, "" if value is None else str(value))
    return settings


def ensure_storage(app_root) -> Azurite | None:
    """Resolve AzureWebJobsStorage; when unset, start Azurite for it (returned; caller stops it)."""
    value = os.environ.get(STORAGE_SETTING, "")
    if value.strip():
        os.environ[STORAGE_SETTING] = storage_connection_string(value)
        if value.strip().lower().startswith("usedevelopmentstorage=true"):
            try:
                socket.create_connection(("127.0.0.1", 10001), timeout=1).close()
            except OSError:
                log.warning("%s=UseDevelopmentStorage=true but nothing listens on 127.0.0.1:10001; "
                            "start Azurite, or leave %s empty and the host starts one",
                            STORAGE_SETTING, STORAGE_SETTING)
        return None
    workspace = Path(app_root) / ".gatehouse" / "azurite"
    workspace.mkdir(parents=True, exist_ok=True)
    azurite = Azurite(str(workspace)).start()
    os.environ[STORAGE_SETTING] = azurite.connection_string
    pid = azurite.process.pid if azurite.process is not None else None  # started: never None
    log.info("%s is not set: started Azurite (pid %s, queue port %d, workspace %s)",
             STORAGE_SETTING, pid, azurite.ports["queue"], workspace)
    return azurite


def load_app(spec: str, app_root):
    """Import `module:attribute` (default attribute `app`) with the app root on sys.path."""
    module_name, _, attribute = spec.partition(":")
    root = str(Path(app_root).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    app = getattr(importlib.import_module(module_name), attribute or "app")
    if not hasattr(app, "get_functions"):
        raise TypeError(f"{spec} is not an azure.functions.FunctionApp")
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.dev.local_host",
                                     description="Run a FunctionApp locally, like `func start`.")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the app")
    parser.add_argument("--app-root", default=".", help="directory with host.json and the app")
    parser.add_argument("--port", type=int, default=None,
                        help="HTTP port (default: local.settings.json Host.LocalHttpPort or 7071)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="[%(asctime)s] %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    app_root = Path(args.app_root).resolve()
    settings = load_local_settings(app_root)
    configure_logging(Settings.from_env().log_format)
    port = args.port if args.port is not None else int(
        (settings.get("Host") or {}).get("LocalHttpPort", 7071))
    host = LocalHost.from_app_root(app_root, args.app, port, args.host)
    try:
        host.start()
        while not stop.wait(0.5):
            pass
    finally:
        host.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
