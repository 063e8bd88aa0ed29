"""The crash suite's stack: real Azurite, moto S3, `mlflow server`, embedded serving, the local
Functions host (restartable on the same port, with failpoints armed or not), and recording proxies
in front of MLflow and serving that count every write the host makes.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import requests

from shared.dev import devstack
from shared.dev.host_keys import KEY_HEADER
from shared.foundation import queues
from shared.foundation.failpoints import ENVIRONMENT, EXIT_STATUS
from shared.foundation.paths import PROJECT_ROOT
from shared.foundation.storage import free_port, queue_service

FUNCTION_TIMEOUT = "00:00:06"  # the leases a crashed host leaves behind run out this fast
WORK_QUEUES = (queues.REGISTRY_EVENTS, queues.GATEHOUSE_EVENTS, queues.RUN_GATES,
               queues.START_CANARY, queues.OPEN_ROLLBACK, queues.TRIGGER_RETRAINING,
               queues.NOTIFICATIONS, queues.RAMP_TICKS, queues.MONITOR_TICKS)


@dataclass
class Write:
    method: str
    path: str
    body: dict


@dataclass
class RecordingProxy:
    """Forwards every request to `upstream`; remembers each write (anything but GET/HEAD)."""

    upstream: str
    writes: list[Write] = field(default_factory=list)

    def start(self) -> RecordingProxy:
        proxy = self
        session = requests.Session()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command not in ("GET", "HEAD"):
                    proxy.record(self.command, self.path, body)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                answer = session.request(self.command, proxy.upstream + self.path, data=body,
                                         headers=headers, timeout=120, allow_redirects=False)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection",
                                           "content-encoding", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._lock = threading.Lock()
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def record(self, method: str, path: str, raw: bytes) -> None:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        with self._lock:
            self.writes.append(Write(method, urlsplit(path).path, body
                                     if isinstance(body, dict) else {}))

    def matching(self, path_suffix: str, **fields) -> list[Write]:
        with self._lock:
            return [w for w in self.writes if w.path.endswith(path_suffix)
                    and all(w.body.get(k) == v for k, v in fields.items())]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def app_root(directory: Path) -> Path:
    """The project's app with a short functionTimeout (host.json), so leases run out fast."""
    host_json = json.loads((PROJECT_ROOT / "host.json").read_text())
    host_json["functionTimeout"] = FUNCTION_TIMEOUT
    host_json["extensions"]["queues"]["maxPollingInterval"] = "00:00:01"
    host_json["extensions"]["queues"]["visibilityTimeout"] = "00:00:01"  # retries come quickly
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "host.json").write_text(json.dumps(host_json, indent=2))
    for name in ("function_app.py", "functions"):
        if not (directory / name).exists():
            (directory / name).symlink_to(PROJECT_ROOT / name)
    return directory


class CrashHost:
    """The local host, started and restarted on one port (MLflow's webhook points at it)."""

    def __init__(self, log_dir: Path, storage: str, env: dict[str, str]):
        self.log_dir, self.storage = log_dir, storage
        self.env = {"GATEHOUSE_FUNCTION_KEY": secrets.token_urlsafe(24),
                    "GATEHOUSE_MASTER_KEY": secrets.token_urlsafe(24), **env}
        self.port = free_port()
        self.root = app_root(log_dir / "app")
        self.process: devstack.ManagedProcess | None = None
        self.lives = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, failpoint: str | None = None, also_armed: str = "",
              timers: tuple[str, ...] = ()) -> CrashHost:
        """The host, armed at `failpoint` (and `also_armed`), running the timer functions named
        in `timers` too (the stack's settings disable the timers)."""
        self.lives += 1
        env = {"AzureWebJobsStorage": self.storage, "PYTHONUNBUFFERED": "1",
               **devstack.NO_TELEMETRY, **self.env,
               **{f"AzureWebJobs.{timer}.Disabled": "false" for timer in timers}}
        # Unarmed, every point only logs that it was reached.
        env[ENVIRONMENT] = ";".join(filter(None, [f"{failpoint}=exit" if failpoint else "*=trace",
                                                  also_armed]))
        command = [sys.executable, "-m", "shared.dev.local_host", "--port", str(self.port),
                   "--app-root", str(self.root)]
        self.process = devstack.ManagedProcess(f"host-{self.lives}", command, env, self.port,
                                               self.log_dir)
        self.process.env = env
        devstack.host_ready(self.process.launch())
        return self

    def key_headers(self) -> dict[str, str]:
        return {KEY_HEADER: self.env["GATEHOUSE_FUNCTION_KEY"]}

    def alive(self) -> bool:
        try:
            return requests.get(f"{self.url}/api/health", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def crashed(self) -> bool:
        """True once the host has ended with the failpoint's status."""
        assert self.process is not None and self.process.process is not None
        code = self.process.process.poll()
        if code is not None and code != EXIT_STATUS:
            raise AssertionError(f"host ended with {code}, not by a failpoint:\n"
                                 f"{self.process.log()[-3000:]}")
        return code == EXIT_STATUS

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return self.process.log() if self.process else ""

    def lines_about(self, word: str) -> str:
        """The log lines of every life (kept) that mention `word`."""
        return "".join(line for path in sorted(self.log_dir.glob("host-*.log"))
                       for line in path.read_text(errors="replace").splitlines(keepends=True)
                       if word in line)

    def all_logs(self) -> str:
        """Every life's log, and forget them (the next flow starts afresh)."""
        text = ""
        for path in sorted(self.log_dir.glob("host-*.log")):
            text += path.read_text(errors="replace")
            path.unlink()
        return text


def queue_depths(storage: str) -> dict[str, int]:
    """Messages on each work queue and its poison queue, invisible ones included."""
    service = queue_service(storage)
    depths = {}
    for name in WORK_QUEUES + tuple(f"{q}-poison" for q in WORK_QUEUES):
        client = service.get_queue_client(name)
        try:
            depths[name] = client.get_queue_properties().approximate_message_count
        except Exception:
            depths[name] = 0
    return depths


def drained(storage: str, expected_poison: str | None = None) -> bool:
    return not any(count for queue, count in queue_depths(storage).items()
                   if queue != f"{expected_poison}-poison")


def wait_drained(storage: str, host: CrashHost, timeout: float = 90,
                 expected_poison: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if drained(storage, expected_poison):
            time.sleep(0.5)  # a handler may be between deleting its message and acting
            if drained(storage, expected_poison):
                return
        time.sleep(0.3)
    raise TimeoutError(f"queues never drained: {queue_depths(storage)}\n{host.log()[-4000:]}")


def clear_queue(storage: str, name: str) -> None:
    queue_service(storage).get_queue_client(name).clear_messages()
