"""Session-scoped real servers, shared by every test that needs them."""

from __future__ import annotations

import os

os.environ.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})

import secrets
from pathlib import Path

import pytest

from shared.dev import devstack
from shared.foundation import runtime
from shared.foundation.storage import Azurite


@pytest.fixture(autouse=True)
def fresh_settings():
    """runtime.settings() is read once per worker; each test reads the environment it sets up."""
    runtime.settings.cache_clear()
    yield
    runtime.settings.cache_clear()


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    emulator = Azurite(str(tmp_path_factory.mktemp("azurite"))).start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def storage(azurite) -> str:
    """A connection string for the session's Azurite."""
    return azurite.connection_string


@pytest.fixture(scope="session")
def moto_s3(server_logs):
    server = devstack.start_moto(server_logs)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(server_logs, moto_s3):
    server = devstack.start_mlflow(server_logs, moto_s3.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def webhook_secret() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="session")
def outbox_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outbox") / "outbox.jsonl"


@pytest.fixture(scope="session")
def host_storage(tmp_path_factory) -> str:
    """The function host's own Azurite, so its queue consumers never race in-process tests."""
    emulator = Azurite(str(tmp_path_factory.mktemp("host-azurite"))).start()
    yield emulator.connection_string
    emulator.stop()


@pytest.fixture(scope="session")
def function_host(server_logs, host_storage, webhook_secret, outbox_path, mlflow_server, moto_s3):
    host = devstack.start_function_host(server_logs, host_storage, {
        **devstack.mlflow_client_env(moto_s3.url),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "GATEHOUSE_MLFLOW_WEBHOOK_SECRET": webhook_secret,
        "GATEHOUSE_DATABRICKS_WEBHOOK_SECRET": webhook_secret,
        "GATEHOUSE_FORWARDER_SECRET": webhook_secret,
        "GATEHOUSE_OUTBOX_PATH": str(outbox_path),
    })
    yield host
    host.stop()


@pytest.fixture
def storage_env(storage, monkeypatch):
    """Point in-process handlers at the session's Azurite."""
    monkeypatch.setenv("AzureWebJobsStorage", storage)
    runtime.reset()
    yield storage
    runtime.reset()


@pytest.fixture(scope="session")
def spark():
    """One Spark for the whole test session (about 20 s to start, and only when a test asks for
    it): a Spark Connect session to a local server, the only API Databricks serverless and shared
    clusters offer, so what Connect forbids fails here too. UTC and ANSI mode, as a Databricks
    SQL warehouse: the gates on Spark and the statement-execution peer both run on it."""
    from shared.gates.spark import session

    # pyspark's test mode: the local Connect server takes a free port instead of 15002, so
    # test runs (and benchmarks) on the same machine do not collide
    os.environ["SPARK_TESTING"] = "1"
    found = session("local[2]")
    for name, value in {"spark.sql.session.timeZone": "UTC", "spark.sql.ansi.enabled": "true",
                        "spark.sql.shuffle.partitions": "2"}.items():
        found.conf.set(name, value)
    yield found
    found.stop()
