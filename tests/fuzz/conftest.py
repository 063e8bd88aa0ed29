"""The Function App in-process, as the fuzz tests drive it: its own Azurite (what the fuzzer
gets accepted stays out of the other tests' queues), the session's MLflow server, a payload log
for the monitor, and the secrets the fuzzer signs with."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import azure.functions as func
import pytest

from shared.dev import devstack
from shared.foundation import runtime
from shared.foundation.storage import Azurite
from tests.fuzz.hostile import FuzzRequest, Secrets

Answer = tuple[int, str, bytes]  # status, content type, body


@pytest.fixture(scope="session")
def fuzz_secrets() -> Secrets:
    return Secrets()


@pytest.fixture(scope="session")
def http_functions() -> dict[str, Callable]:
    import function_app

    return {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()
            if f.get_trigger().get_dict_repr()["type"] == "httpTrigger"}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory, mlflow_server, moto_s3, fuzz_secrets,
             http_functions) -> Iterator[Callable[[FuzzRequest], Answer]]:
    # mlflow is imported once here: seconds on a loaded machine, which the per-example deadline
    # (meant for stuck parsers) would otherwise count against the status routes' first example.
    import mlflow.artifacts  # noqa: F401

    from shared.serving.payload_log import PayloadLog

    work = tmp_path_factory.mktemp("fuzz")
    azurite = Azurite(str(work / "azurite")).start()
    PayloadLog(work / "payloads.sqlite")  # an empty payload log: the monitor has traffic to read
    environment = {**devstack.mlflow_client_env(moto_s3.url), **fuzz_secrets.environment(),
                   "AzureWebJobsStorage": azurite.connection_string,
                   "MLFLOW_TRACKING_URI": mlflow_server.url,
                   "GATEHOUSE_PAYLOAD_LOG": str(work / "payloads.sqlite"),
                   "GATEHOUSE_OUTBOX_PATH": str(work / "outbox.jsonl")}

    def call(request: FuzzRequest) -> Answer:
        headers = {name.lower(): value for name, value in request.headers.items()}
        reply = http_functions[request.function](func.HttpRequest(
            request.method, "http://127.0.0.1/api/fuzz", headers=headers, params=request.params,
            route_params=request.route_params, body=request.body))
        return reply.status_code, reply.mimetype or "", reply.get_body() or b""

    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        runtime.reset()
        try:
            yield call
        finally:
            runtime.reset()
            azurite.stop()
