"""shared.dev.local_host: the local Functions host, in-process and as
`python -m shared.dev.local_host`."""

import base64
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import azure.functions as func
import pytest
import requests

from shared.dev.local_host import LocalHost
from shared.foundation.storage import PROJECT_ROOT

APP_ROOT = Path(__file__).parent / "local_host_app"
QUEUES = ["lh-work", "lh-done", "lh-work-poison", "lh-fanout", "lh-fanout-out", "lh-fail",
          "lh-fail-poison", "lh-timer", "lh-plain", "lh-plain-done"]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def service(azurite):
    """AzureWebJobsStorage -> the test Azurite; the test queues exist and are empty."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.queue import QueueServiceClient

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AzureWebJobsStorage", azurite.connection_string)
        service = QueueServiceClient.from_connection_string(azurite.connection_string)
        for name in QUEUES:
            try:
                service.create_queue(name)
            except ResourceExistsError:
                service.get_queue_client(name).clear_messages()
        yield service


@pytest.fixture(scope="module")
def app():
    spec = importlib.util.spec_from_file_location("local_host_test_app",
                                                  APP_ROOT / "function_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


@pytest.fixture(scope="module")
def host(service, app):
    logging.getLogger("gatehouse.host").setLevel(logging.INFO)
    local = LocalHost(app, APP_ROOT, port=0).start()
    yield local
    local.stop()


@pytest.fixture()
def logs(caplog):
    caplog.set_level(logging.INFO, logger="gatehouse.host")
    return caplog


def receive(service, queue: str, count: int = 1, timeout: float = 10.0) -> list[str]:
    """Wait for `count` messages on `queue`; return their raw contents (and delete them)."""
    client, found = service.get_queue_client(queue), []
    deadline = time.monotonic() + timeout
    while len(found) < count and time.monotonic() < deadline:
        for message in client.receive_messages(max_messages=32):
            found.append(message.content)
            client.delete_message(message)
        time.sleep(0.05)
    assert len(found) >= count, f"got {found} on {queue}, wanted {count} message(s)"
    return found


def queue_is_empty(service, queue: str) -> bool:
    return service.get_queue_client(queue).get_queue_properties().approximate_message_count == 0


# -- HTTP -------------------------------------------------------------------------------------

def test_route_params_query_headers_and_response(host):
    r = requests.get(f"{host.url}/api/items/42?a=1&b=x y", headers={"X-Test": "yes"}, timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Item"] == "42"
    assert r.json() == {"id": "42", "params": {"a": "1", "b": "x y"}, "method": "GET", "body": "",
                        "url": f"{host.url}/api/items/42?a=1&b=x%20y", "header": "yes"}
    r = requests.post(f"{host.url}/api/items/7", data=b"payload", timeout=5)
    assert (r.status_code, r.json()["body"], r.json()["method"]) == (201, "payload", "POST")


def test_chunked_request_body(host):
    r = requests.post(f"{host.url}/api/items/7", data=iter([b"ab", b"cd", b"ef"]), timeout=5)
    assert r.json()["body"] == "abcdef"


def test_optional_route_param_str_return_and_head(host):
    r = requests.get(f"{host.url}/api/greet", timeout=5)
    assert (r.status_code, r.text, r.headers["Content-Type"]) == (
        200, "hello world", "text/plain; charset=utf-8")
    assert requests.get(f"{host.url}/api/greet/bob", timeout=5).text == "hello bob"
    r = requests.head(f"{host.url}/api/greet/bob", timeout=5)
    assert (r.status_code, r.headers["Content-Length"], r.content) == (200, "9", b"")


def test_unknown_route_is_404_with_json(host):
    for path in ("/api/nope", "/api/items/abc", "/items/42", "/api/items/1/2"):
        r = requests.get(host.url + path, timeout=5)
        assert r.status_code == 404, path
        assert r.json()["error"] == "Not Found"


def test_wrong_method_is_405(host):
    r = requests.delete(f"{host.url}/api/items/42", timeout=5)
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, POST"
    assert r.json()["allowed"] == ["GET", "POST"]


def test_exception_is_500_and_logged(host, logs):
    r = requests.get(f"{host.url}/api/boom", timeout=5)
    assert (r.status_code, r.content) == (500, b"")
    failed = [rec for rec in logs.records if "Executed 'Functions.boom' (Failed" in rec.message]
    # The record, not its rendering: pyspark, once loaded in the test session, formats as JSON.
    assert [repr(rec.exc_info[1]) for rec in failed if rec.exc_info] == [
        "RuntimeError('boom on purpose')"]


def test_requests_are_served_concurrently(host):
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: requests.get(f"{host.url}/api/slow?seconds=0.6",
                                                       timeout=5), range(4)))
    assert [r.text for r in results] == ["done"] * 4
    assert time.monotonic() - started < 1.5


def test_route_templates_and_precedence(tmp_path):
    routes_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    for name, route in [("by_source", "alerts/{source}"), ("summary", "alerts/summary"),
                        ("files", "files/{*path}"), ("page", "page/{n:int=1}"),
                        ("report", "reports/{year:int}-{month:int}")]:
        routes_app.function_name(name)(routes_app.route(route=route)(lambda req: None))
    routes = LocalHost(routes_app, tmp_path, port=0).routes

    def match(path):
        return next(((r.fn.name, params) for r in routes
                     if (params := r.match(path)) is not None), None)

    assert match("/api/alerts/summary") == ("summary", {})
    assert match("/api/ALERTS/mlflow/") == ("by_source", {"source": "mlflow"})
    assert match("/api/alerts/a%20b") == ("by_source", {"source": "a b"})
    assert match("/api/files/a/b/c.txt") == ("files", {"path": "a/b/c.txt"})
    assert match("/api/files") == ("files", {})
    assert match("/api/page") == ("page", {"n": "1"})
    assert match("/api/page/3") == ("page", {"n": "3"})
    assert match("/api/page/x") is None
    assert match("/api/reports/2024-05") == ("report", {"year": "2024", "month": "05"})


def test_disabled_setting_switches_a_function_off(tmp_path, monkeypatch):
    two = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    for name in ("kept", "dropped"):
        two.function_name(name)(two.route(route=name)(lambda req: "ok"))
    monkeypatch.setenv("AzureWebJobs.dropped.Disabled", "true")
    local = LocalHost(two, tmp_path, port=0)
    assert [fn.name for fn in local.functions] == ["kept"]
    assert local.disabled == ["dropped"]
    assert [route.fn.name for route in local.routes] == ["kept"]


def test_local_settings_do_not_override_the_environment(tmp_path, monkeypatch):
    from shared.dev.local_host import ensure_storage, load_local_settings
    from shared.foundation.storage import azurite_connection_string

    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {
        "LH_SET_ALREADY": "from file", "LH_NEW": "from file",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true"}}))
    monkeypatch.setenv("LH_SET_ALREADY", "from env")
    for name in ("LH_NEW", "AzureWebJobsStorage"):  # unset now, restored afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    load_local_settings(tmp_path)
    assert (os.environ["LH_SET_ALREADY"], os.environ["LH_NEW"]) == ("from env", "from file")
    assert ensure_storage(tmp_path) is None  # storage configured: no Azurite of our own
    assert os.environ["AzureWebJobsStorage"] == azurite_connection_string()


# -- queues and timers ------------------------------------------------------------------------

def test_queue_message_is_processed_and_deleted(host, service):
    service.get_queue_client("lh-work").send_message(b64('{"hello": "wörld"}'))
    [done] = receive(service, "lh-done")
    result = json.loads(base64.b64decode(done))
    assert result["body"] == '{"hello": "wörld"}'
    assert result["dequeue_count"] == 1 and result["has_insertion_time"] and result["id"]
    assert queue_is_empty(service, "lh-work")


def test_http_output_binding_enqueues(host, service):
    r = requests.post(f"{host.url}/api/send", data="from http", timeout=5)
    assert r.status_code == 202
    [done] = receive(service, "lh-done")  # lh-work's function picked it up
    assert json.loads(base64.b64decode(done))["body"] == "from http"


def test_output_binding_list_of_str_and_bytes(host, service):
    service.get_queue_client("lh-fanout").send_message(b64("x"))
    contents = receive(service, "lh-fanout-out", count=2)
    assert sorted(base64.b64decode(c).decode() for c in contents) == ["x-1", "x-2"]


def test_failing_message_goes_to_poison_after_max_dequeue_count(host, service, logs):
    service.get_queue_client("lh-fail").send_message(b64("doomed ✓"))
    [poisoned] = receive(service, "lh-fail-poison", timeout=15)
    assert base64.b64decode(poisoned).decode() == "doomed ✓"  # intact, still base64
    assert queue_is_empty(service, "lh-fail")
    attempts = [r for r in logs.records if "Executed 'Functions.fail' (Failed" in r.message]
    assert len(attempts) == 2  # maxDequeueCount in tests/local_host_app/host.json
    assert "Moving message to queue 'lh-fail-poison'" in logs.text


def test_message_that_is_not_base64_goes_to_poison(host, service, logs):
    service.get_queue_client("lh-work").send_message("this is not base64!")
    assert receive(service, "lh-work-poison") == ["this is not base64!"]
    assert "is not valid base64" in logs.text
    assert not [r for r in logs.records if "Executing 'Functions.work'" in r.message]


def test_timer_run_on_startup_fires(host, service):
    [fired] = receive(service, "lh-timer")
    assert json.loads(base64.b64decode(fired)) == {"past_due": False, "function": "startup_timer"}


def test_message_encoding_none(service, tmp_path):
    host_json = json.loads((APP_ROOT / "host.json").read_text())
    host_json["extensions"]["queues"]["messageEncoding"] = "none"
    host_json["extensions"]["http"]["routePrefix"] = ""
    (tmp_path / "host.json").write_text(json.dumps(host_json))
    plain = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @plain.queue_trigger(arg_name="msg", queue_name="lh-plain", connection="AzureWebJobsStorage")
    @plain.queue_output(arg_name="$return", queue_name="lh-plain-done",
                        connection="AzureWebJobsStorage")
    def echo(msg: func.QueueMessage) -> str:
        return msg.get_body().decode() + "!"

    @plain.route(route="ping")
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    local = LocalHost(plain, tmp_path, port=0).start()
    try:
        assert requests.get(f"{local.url}/ping", timeout=5).text == "pong"  # empty routePrefix
        service.get_queue_client("lh-plain").send_message('{"raw": "tëxt"}')
        assert receive(service, "lh-plain-done") == ['{"raw": "tëxt"}!']
    finally:
        local.stop()


def test_stop_lets_in_flight_requests_finish(service, tmp_path):
    (tmp_path / "host.json").write_text((APP_ROOT / "host.json").read_text())
    slow_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @slow_app.route(route="slow")
    def slow(req: func.HttpRequest) -> func.HttpResponse:
        time.sleep(0.8)
        return func.HttpResponse("finished")

    local = LocalHost(slow_app, tmp_path, port=0).start()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.get, f"{local.url}/api/slow", timeout=5)
        time.sleep(0.3)
        local.stop()
        assert pending.result().text == "finished"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{local.url}/api/slow", timeout=2)


# -- the command line -------------------------------------------------------------------------

def test_subprocess_starts_its_own_azurite_and_exits_0_on_sigterm(tmp_path):
    for name in ("function_app.py", "host.json"):
        shutil.copy(APP_ROOT / name, tmp_path / name)
    (tmp_path / "local.settings.json").write_text(json.dumps(
        {"IsEncrypted": False, "Values": {"LOCAL_HOST_GREETING": "hi", "AzureWebJobsStorage": ""}}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "AzureWebJobsStorage"}
    command = [sys.executable, "-m", "shared.dev.local_host", "--app-root", str(tmp_path),
               "--port", str(port)]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not any(f"Host started on http://127.0.0.1:{port}" in line for line in lines):
            assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        assert requests.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json() == {
            "status": "ok", "greeting": "hi"}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines)
    assert "health: [GET] http://127.0.0.1:" in output and "Host stopped" in output
    queue_port = int(re.search(r"started Azurite \(pid \d+, queue port (\d+)", output).group(1))
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", queue_port), timeout=1).close()
    assert (tmp_path / ".gatehouse" / "azurite").is_dir()


# -- message leases ---------------------------------------------------------------------------

def test_message_lease_is_one_function_timeout_at_most_ten_minutes():
    from shared.dev.local_host import message_lease_seconds

    assert message_lease_seconds({"functionTimeout": "00:00:08"}) == 8
    assert message_lease_seconds({"functionTimeout": "00:00:00.5"}) == 1
    assert message_lease_seconds({}) == 300  # the host's default functionTimeout
    assert message_lease_seconds({"functionTimeout": "01:00:00"}) == 600
    assert message_lease_seconds({"functionTimeout": "-1"}) == 600


def short_timeout_root(root: Path, function_timeout: str) -> Path:
    host_json = json.loads((APP_ROOT / "host.json").read_text())
    host_json["functionTimeout"] = function_timeout
    (root / "host.json").write_text(json.dumps(host_json))
    return root


def test_a_message_stays_leased_while_its_function_outlasts_the_lease(service, tmp_path):
    queue, done = f"lh-slow-{uuid.uuid4().hex[:6]}", f"lh-slow-done-{uuid.uuid4().hex[:6]}"
    for name in (queue, done):
        service.create_queue(name)
    slow_app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @slow_app.queue_trigger(arg_name="msg", queue_name=queue, connection="AzureWebJobsStorage")
    @slow_app.queue_output(arg_name="$return", queue_name=done, connection="AzureWebJobsStorage")
    def slow(msg: func.QueueMessage) -> str:
        time.sleep(4.5)  # over two leases of 2 s: renewed at half of each
        return json.dumps({"dequeue_count": msg.dequeue_count})

    local = LocalHost(slow_app, short_timeout_root(tmp_path, "00:00:02"), port=0).start()
    try:
        service.get_queue_client(queue).send_message(b64("slow"))
        [first] = receive(service, done, timeout=15)
        time.sleep(2.5)  # a message whose lease had lapsed would run a second time by now
        assert list(service.get_queue_client(done).receive_messages()) == []
    finally:
        local.stop()
    assert json.loads(base64.b64decode(first)) == {"dequeue_count": 1}
    assert queue_is_empty(service, queue)


CRASHING_APP = '''
import azure.functions as func

from shared.foundation.failpoints import failpoint

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.queue_trigger(arg_name="msg", queue_name="{queue}", connection="AzureWebJobsStorage")
def crash(msg: func.QueueMessage) -> None:
    failpoint("local_host_test.crashed")
'''


def test_a_message_whose_host_died_reappears_within_one_function_timeout(azurite, tmp_path):
    from azure.storage.queue import QueueClient

    queue = f"lh-crash-{uuid.uuid4().hex[:6]}"
    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    client.create_queue()
    root = short_timeout_root(tmp_path, "00:00:03")
    (root / "function_app.py").write_text(CRASHING_APP.replace("{queue}", queue))
    env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string,
           "GATEHOUSE_FAILPOINTS": "local_host_test.crashed=exit"}
    client.send_message(b64("doomed host"))
    process = subprocess.run([sys.executable, "-m", "shared.dev.local_host", "--app-root",
                              str(root), "--port", "0"], cwd=PROJECT_ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    died = time.monotonic()
    assert process.returncode == 137, process.stdout + process.stderr
    deadline = died + 3 + 2  # one functionTimeout, and some slack for polling
    while not (messages := list(client.receive_messages(max_messages=1))):
        assert time.monotonic() < deadline, "the message did not reappear"
        time.sleep(0.1)
    [message] = messages
    assert base64.b64decode(message.content).decode() == "doomed host"
    assert message.dequeue_count == 2
    client.delete_message(message)
