"""Function keys on the local host, as Azure enforces them: anonymous routes are open, FUNCTION
routes want the function (or master) key in x-functions-key or ?code=, ADMIN routes the master
key; keys come from the settings or are generated once per app root."""

from __future__ import annotations

import logging

import azure.functions as func
import pytest
import requests

from shared.dev import host_keys
from shared.dev.host_keys import HostKeys
from shared.dev.local_host import LocalHost


def keyed_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

    @app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def open_route(req: func.HttpRequest) -> str:
        return "open"

    @app.route(route="keyed/{thing}", methods=["GET", "POST"])
    def keyed(req: func.HttpRequest) -> str:
        return f"keyed {req.route_params['thing']}"

    @app.route(route="admin", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
    def admin(req: func.HttpRequest) -> str:
        return "admin"

    return app


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    local = LocalHost(keyed_app(), tmp_path_factory.mktemp("keys"), port=0,
                      keys=HostKeys("the-function-key", "the-master-key", "test")).start()
    yield local
    local.stop()


def refusal(reply: requests.Response) -> str:
    assert reply.status_code == 401, reply.text
    return reply.json()["error"]


def test_anonymous_routes_need_no_key(host):
    assert requests.get(f"{host.url}/api/open", timeout=5).text == "open"


def test_function_routes_want_the_function_or_master_key(host):
    url = f"{host.url}/api/keyed/a"
    assert "a function key is required" in refusal(requests.get(url, timeout=5))
    assert "x-functions-key" in refusal(requests.get(url, headers={"x-functions-key": "nope"},
                                                     timeout=5))
    assert "code" in refusal(requests.get(url, params={"code": "the-function-ke"}, timeout=5))
    for key in ("the-function-key", "the-master-key"):
        assert requests.get(url, headers={"X-Functions-Key": key}, timeout=5).text == "keyed a"
        assert requests.post(url, params={"code": key}, timeout=5).text == "keyed a"


def test_admin_routes_want_the_master_key(host):
    url = f"{host.url}/api/admin"
    assert "master key is required" in refusal(
        requests.get(url, headers={"x-functions-key": "the-function-key"}, timeout=5))
    assert requests.get(url, params={"code": "the-master-key"}, timeout=5).text == "admin"


def test_unknown_routes_and_methods_are_answered_before_keys(host):
    assert requests.get(f"{host.url}/api/nowhere", timeout=5).status_code == 404
    assert requests.delete(f"{host.url}/api/keyed/a", timeout=5).status_code == 405


def test_keys_compare_whole_and_any_bytes(host):
    url = f"{host.url}/api/keyed/a"
    for wrong in ("the-function-key-", "the-function-key\u00e9", "THE-FUNCTION-KEY", "x" * 5000):
        headers = {"x-functions-key": wrong.encode("utf-8").decode("latin-1")}
        assert requests.get(url, headers=headers, timeout=5).status_code == 401


def test_unset_keys_are_generated_once_per_app_root_and_logged(tmp_path, monkeypatch, caplog):
    for name in ("GATEHOUSE_FUNCTION_KEY", "GATEHOUSE_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    caplog.set_level(logging.INFO, logger="gatehouse.host")
    first = LocalHost(keyed_app(), tmp_path, port=0).start()
    try:
        saved = host_keys.read_keys(tmp_path)
        assert saved is not None and first.keys is not None
        assert (first.keys.function, first.keys.master) == (saved.function, saved.master)
        assert f"Function key: {saved.function}" in caplog.text
        assert f"Master key: {saved.master}" in caplog.text
        assert "keyed: [GET,POST]" in caplog.text and "(function key)" in caplog.text
        reply = requests.get(f"{first.url}/api/keyed/b", params={"code": saved.function},
                             timeout=5)
        assert reply.text == "keyed b"
    finally:
        first.stop()
    second = LocalHost(keyed_app(), tmp_path, port=0)
    assert second.keys is not None and second.keys.function == saved.function


def test_keys_from_the_settings_win(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEHOUSE_FUNCTION_KEY", "configured-function-key")
    monkeypatch.setenv("GATEHOUSE_MASTER_KEY", "configured-master-key")
    local = LocalHost(keyed_app(), tmp_path, port=0)
    assert local.keys == HostKeys("configured-function-key", "configured-master-key",
                                  "GATEHOUSE_FUNCTION_KEY/GATEHOUSE_MASTER_KEY")
    assert host_keys.read_keys(tmp_path) is None  # nothing generated, nothing written


def test_an_app_without_keyed_routes_writes_no_keys(tmp_path):
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.route(route="ping")(lambda req: "pong")
    assert LocalHost(app, tmp_path, port=0).keys is None
    assert not (tmp_path / host_keys.KEYS_FILE).exists()


def test_two_hosts_generating_at_once_agree(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: host_keys.resolve(tmp_path, None, None), range(16)))
    assert len({(k.function, k.master) for k in keys}) == 1
    assert [p.name for p in (tmp_path / ".gatehouse").iterdir()] == ["host-keys.json"]
