"""The embedded stack for tests and the demo: moto S3, a real `mlflow server`, the local host.

Each runs as its own process group and is stopped by its own pid.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.dev.host_keys import KEY_HEADER
from shared.foundation.storage import PROJECT_ROOT, free_port, wait_for_port

BIN = Path(sys.executable).parent
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}
# MLflow's usage telemetry would call out of this machine, and its background thread edits
# os.environ while other threads read it.
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
ARTIFACT_BUCKET = "mlflow-artifacts"
MLFLOW_START_TIMEOUT = 180


def wait_for(what: str, condition, timeout: float = 60, interval: float = 0.2):
    """Poll `condition` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")


class ManagedProcess:
    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int,
                 log_dir: Path, cwd: Path = PROJECT_ROOT):
        self.name, self.command, self.env, self.port, self.cwd = name, command, env, port, cwd
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> ManagedProcess:
        """Start the process without waiting for it; `ready` waits. Lets a stack start in
        parallel."""
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command, env={**os.environ, **self.env},
                                        cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        return self

    def ready(self, timeout: float = 120) -> ManagedProcess:
        try:
            wait_for_port(self.port, timeout, self.process)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log()[-3000:]}") from exc
        return self

    def start(self, timeout: float = 120) -> ManagedProcess:
        return self.launch().ready(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process is None or self.process.poll() is not None:  # not running
                break
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} never logged {text!r}:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 15) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        # The server's own pid first; its process group only if it does not go.
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait()


def moto_process(log_dir: Path) -> ManagedProcess:
    port = free_port()
    return ManagedProcess("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                          FAKE_AWS, port, log_dir)


def start_moto(log_dir: Path) -> ManagedProcess:
    return moto_process(log_dir).start()


def create_bucket(moto_url: str, bucket: str) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_url, **{
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
        "region_name": "us-east-1"})
    s3.create_bucket(Bucket=bucket)


def mlflow_client_env(moto_url: str) -> dict[str, str]:
    """What an MLflow client (and server) needs to reach the artifact store on moto."""
    return {**FAKE_AWS, **NO_TELEMETRY, "MLFLOW_S3_ENDPOINT_URL": moto_url}


def mlflow_process(log_dir: Path, moto_url: str,
                   bucket: str = ARTIFACT_BUCKET) -> ManagedProcess:
    """A `mlflow server` on SQLite with artifacts in `bucket` on moto (create the bucket before
    logging artifacts)."""
    from cryptography.fernet import Fernet

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="gatehouse-mlflow-"))
    env = {
        **mlflow_client_env(moto_url),
        # Let the server deliver webhooks to the local host on loopback over http.
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    }
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1",
               "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
               "--artifacts-destination", f"s3://{bucket}/"]
    return ManagedProcess("mlflow", command, env, port, log_dir)


def start_mlflow(log_dir: Path, moto_url: str, bucket: str = ARTIFACT_BUCKET) -> ManagedProcess:
    create_bucket(moto_url, bucket)
    return mlflow_process(log_dir, moto_url, bucket).start(timeout=MLFLOW_START_TIMEOUT)


class FunctionHost(ManagedProcess):
    """The local Functions host, with the keys it was started with."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, log_dir: Path):
        super().__init__("function-host", command, env, port, log_dir)
        self.function_key = env["GATEHOUSE_FUNCTION_KEY"]
        self.master_key = env["GATEHOUSE_MASTER_KEY"]

    @property
    def key_headers(self) -> dict[str, str]:
        """What a request to a function-level route carries."""
        return {KEY_HEADER: self.function_key}


def function_host_process(log_dir: Path, storage: str,
                          extra_env: dict[str, str]) -> FunctionHost:
    port = free_port()
    env = {"AzureWebJobsStorage": storage, "PYTHONUNBUFFERED": "1", **NO_TELEMETRY,
           "GATEHOUSE_FUNCTION_KEY": secrets.token_urlsafe(24),
           "GATEHOUSE_MASTER_KEY": secrets.token_urlsafe(24), **extra_env}
    return FunctionHost([sys.executable, "-m", "shared.dev.local_host", "--port", str(port)],
                        env, port, log_dir)


def host_ready(host: ManagedProcess, timeout: float = 60) -> ManagedProcess:
    """Wait until the host listens and has indexed the app."""
    host.ready(timeout)
    host.wait_for_log("Host started on")
    return host


def start_function_host(log_dir: Path, storage: str, extra_env: dict[str, str]) -> FunctionHost:
    host = function_host_process(log_dir, storage, extra_env)
    host_ready(host.launch())
    return host
