"""Azure Storage connection settings, the host.json queue options, and a local Azurite launcher.

Everything here is cheap to import: the Azure SDKs are imported inside the functions that need them.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from shared.foundation.paths import PROJECT_ROOT

STORAGE_SETTING = "AzureWebJobsStorage"
SCRIPT_ROOT_SETTING = "AzureWebJobsScriptRoot"  # the app root; the Functions host sets it
QUEUE_MESSAGE_LIMIT = 64 * 1024  # bytes of one encoded queue message (Azure's and Azurite's)
DEFAULT_FUNCTION_TIMEOUT = 300.0  # the Functions host's default functionTimeout (Consumption)

# Azurite's well-known development account (published in Azure's docs; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def azurite_connection_string(host: str = "127.0.0.1", blob: int = 10000, queue: int = 10001,
                              table: int = 10002) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{AZURITE_ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{AZURITE_ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{AZURITE_ACCOUNT};"
    )


def storage_connection_string(value: str, account_name: str | None = None,
                              client_id: str | None = None) -> str:
    """The connection string `AzureWebJobsStorage` names (`UseDevelopmentStorage=true`: Azurite).

    With an identity-based connection (the Functions convention: `AzureWebJobsStorage__accountName`
    and optionally `__clientId` for a user-assigned identity, no `AzureWebJobsStorage`), this
    returns `AccountName=<name>;Authentication=ManagedIdentity` (and `ClientId=<id>`), which the
    client factories below turn into clients authenticated by the managed identity.
    """
    if not value.strip():
        if account_name:
            identity = f"AccountName={account_name};Authentication=ManagedIdentity"
            return f"{identity};ClientId={client_id}" if client_id else identity
        raise RuntimeError(f"{STORAGE_SETTING} is not set: no Azure Storage account to use")
    if value.strip().lower().startswith("usedevelopmentstorage=true"):
        return azurite_connection_string()
    return value


def _connection_parts(connection: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in connection.split(";") if "=" in part)


def _identity_account(connection: str) -> str | None:
    parts = _connection_parts(connection)
    if parts.get("Authentication", "").lower() == "managedidentity":
        return parts.get("AccountName")
    return None


def _managed_identity(connection: str):
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        managed_identity_client_id=_connection_parts(connection).get("ClientId"))


# Settings requests can only read from the environment on every request (a scan of os.environ
# and a .netrc search per request: about a tenth of a monitor tick's CPU).
PER_REQUEST_SETTINGS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "netrc")
CA_BUNDLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def _client_options() -> dict:
    """Storage clients read the environment once, not per request: unless proxies or a .netrc
    are configured, requests' look-ups are off and a CA bundle is passed explicitly."""
    if any(name.lower() in PER_REQUEST_SETTINGS for name in os.environ):
        return {}
    from azure.core.pipeline.transport import RequestsTransport

    bundle = next((os.environ[name] for name in CA_BUNDLES if os.environ.get(name)), None)
    return {"transport": RequestsTransport(use_env_settings=False),
            **({"connection_verify": bundle} if bundle else {})}


def queue_service(connection: str):
    from azure.storage.queue import QueueServiceClient

    account = _identity_account(connection)
    if account:
        return QueueServiceClient(f"https://{account}.queue.core.windows.net",
                                  credential=_managed_identity(connection), **_client_options())
    return QueueServiceClient.from_connection_string(connection, **_client_options())


def table_service(connection: str):
    from azure.data.tables import TableServiceClient

    account = _identity_account(connection)
    if account:
        return TableServiceClient(f"https://{account}.table.core.windows.net",
                                  credential=_managed_identity(connection), **_client_options())
    return TableServiceClient.from_connection_string(connection, **_client_options())


def blob_service(connection: str):
    from azure.storage.blob import BlobServiceClient

    account = _identity_account(connection)
    if account:
        return BlobServiceClient(f"https://{account}.blob.core.windows.net",
                                 credential=_managed_identity(connection))
    return BlobServiceClient.from_connection_string(connection)


def _timespan_seconds(value: str | int | float) -> float:
    """host.json timespans are 'hh:mm:ss' (optionally 'd.hh:mm:ss' and fractions)."""
    if isinstance(value, (int, float)):
        return float(value)
    days = 0
    if "." in value.split(":")[0]:
        day_part, value = value.split(".", 1)
        days = int(day_part)
    hours, minutes, seconds = value.split(":")
    return days * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueOptions:
    """The `extensions.queues` section of host.json, with the Functions host's defaults."""

    batch_size: int = 16
    new_batch_threshold: int | None = None
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, host: dict) -> QueueOptions:
        queues = host.get("extensions", {}).get("queues", {})
        options = cls(
            batch_size=int(queues.get("batchSize", 16)),
            new_batch_threshold=(int(queues["newBatchThreshold"])
                                 if "newBatchThreshold" in queues else None),
            max_polling_interval=_timespan_seconds(queues.get("maxPollingInterval", "00:01:00")),
            visibility_timeout=_timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )
        if options.message_encoding not in ("base64", "none"):
            raise ValueError(f"host.json messageEncoding must be 'base64' or 'none', "
                             f"not {options.message_encoding!r}")
        return options

    @property
    def batch_threshold(self) -> int:
        return self.new_batch_threshold if self.new_batch_threshold is not None \
            else max(self.batch_size // 2, 1)


@lru_cache(maxsize=4)
def load_host_json(app_root: str | None = None) -> dict:
    path = Path(app_root or script_root()) / "host.json"
    return json.loads(path.read_text()) if path.exists() else {"version": "2.0"}


def queue_options(app_root: str | None = None) -> QueueOptions:
    """host.json's queue options, of the running app (`script_root`) unless told which."""
    return QueueOptions.from_host_json(load_host_json(app_root or script_root()))


def script_root() -> str:
    """The running app's root (host.json's folder): what the Functions host (and the local
    host) names in AzureWebJobsScriptRoot, else the project."""
    return os.environ.get(SCRIPT_ROOT_SETTING) or str(PROJECT_ROOT)


def function_timeout(host: dict) -> float | None:
    """host.json `functionTimeout` in seconds (the host's default when absent); None when it is
    -1, unbounded."""
    value = host.get("functionTimeout")
    if value is None:
        return DEFAULT_FUNCTION_TIMEOUT
    if str(value).strip() == "-1":
        return None
    return _timespan_seconds(value)


def app_function_timeout() -> float | None:
    """The running app's functionTimeout (see `script_root` and `function_timeout`)."""
    return function_timeout(load_host_json(script_root()))


def encode_queue_message(text: str, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


def decode_queue_message(content: str, encoding: str) -> bytes:
    if encoding == "base64":
        return base64.b64decode(content, validate=True)
    return content.encode("utf-8")


LOWEST_PORT = 20000
_handed_out: set[int] = set()


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port for a server we are about to start, taken below the kernel's
    ephemeral range: there, no outgoing connection's source port can take it before the server
    binds it, and probing it cannot connect a socket to itself."""
    low, _ = _ephemeral_ports()
    for _ in range(100):
        port = random.randrange(LOWEST_PORT, low) if low > LOWEST_PORT + 1000 else 0
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def azurite_executable() -> str:
    local = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        raise RuntimeError("Azurite is not installed: run `npm install` in the project "
                           "(make test and make host do it for you)")
    return found


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before port {port} "
                               f"opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on port {port} within {timeout:.0f}s")


class Azurite:
    """Azurite on free loopback ports with a throwaway workspace, stopped by its own pid."""

    def __init__(self, workspace: str | None = None, in_memory: bool = False):
        self.workspace = workspace or tempfile.mkdtemp(prefix="gatehouse-azurite-")
        self.in_memory = in_memory
        self.ports = {"blob": free_port(), "queue": free_port(), "table": free_port()}
        self.process: subprocess.Popen | None = None

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(blob=self.ports["blob"], queue=self.ports["queue"],
                                         table=self.ports["table"])

    def start(self, timeout: float = 60) -> Azurite:
        return self.launch().ready(timeout)

    def launch(self) -> Azurite:
        """Start the emulator without waiting for it; `ready` waits."""
        command = [
            azurite_executable(), "--silent", "--skipApiVersionCheck", "--loose",
            "--disableTelemetry",
            *(["--inMemoryPersistence"] if self.in_memory else ["--location", self.workspace]),
            "--blobPort", str(self.ports["blob"]), "--queuePort", str(self.ports["queue"]),
            "--tablePort", str(self.ports["table"]),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def ready(self, timeout: float = 60) -> Azurite:
        for port in self.ports.values():
            wait_for_port(port, timeout, self.process)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
