"""The local host against hostile HTTP framing, over raw sockets: lying, huge or malformed
Content-Length, chunked bodies that never end well, request lines it cannot parse, bodies that
stop coming. Every one gets a 4xx in JSON (never a 5xx, never a silent drop), the host reads no
body it is going to refuse, and it stays healthy."""

from __future__ import annotations

import json
import socket
import time

import azure.functions as func
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dev.host_keys import HostKeys
from shared.dev.local_host import LocalHost

LIMIT = 1024


def framing_app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="echo", methods=["POST", "PUT"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.get_body(), mimetype="application/octet-stream")

    @app.route(route="health", methods=["GET"])
    def health(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse('{"status": "ok"}', mimetype="application/json")

    return app


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    local = LocalHost(framing_app(), tmp_path_factory.mktemp("framing"), port=0,
                      keys=HostKeys("fk", "mk", "test"), max_body_bytes=LIMIT,
                      request_timeout=2).start()
    yield local
    local.stop()


def exchange(host: LocalHost, raw: bytes, half_close: bool = True,
             timeout: float = 10) -> bytes:
    """Send `raw`, (by default) stop sending, and read whatever comes back until the host
    closes."""
    with socket.create_connection((host.host, host.port), timeout=timeout) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            received += data
    return received


def answer(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The first response in `raw`: status, headers (lower-case names) and body."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {name.lower(): value for name, value in headers.items()}
    length = int(headers.get("content-length", 0))
    return int(lines[0].split()[1]), headers, rest[:length]


def refused(raw: bytes, status: int, said: str, host: LocalHost, **options) -> dict[str, str]:
    got, headers, body = answer(exchange(host, raw, **options))
    assert got == status, body
    assert said in json.loads(body)["error"]
    return headers


def healthy(host: LocalHost) -> bool:
    got, _, body = answer(exchange(host, b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"))
    return got == 200 and json.loads(body) == {"status": "ok"}


def test_a_huge_content_length_is_refused_before_a_byte_is_read(host):
    started = time.monotonic()
    headers = refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000"
                      b"\r\n\r\n" + b"x" * 5000, 413, "over the limit of 1024 bytes", host,
                      half_close=False)
    assert headers["connection"] == "close"
    assert time.monotonic() - started < 5
    assert healthy(host)


def test_a_body_over_the_limit_sent_whole_still_gets_its_413(host):
    headers = refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
                      + b"x" * 200_000, 413, "GATEHOUSE_MAX_BODY_BYTES", host)
    assert headers["connection"] == "close"
    # A client that sends everything before it reads (requests, http.client) reads the 413 too:
    # the host drains what it refused instead of resetting the connection.
    reply = requests.post(f"{host.url}/api/echo", data=b"x" * 5_000_000, timeout=30)
    assert reply.status_code == 413 and "over the limit" in reply.json()["error"]


def test_expect_continue_with_a_huge_body_is_refused_before_continue(host):
    raw = exchange(host, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
                         b"Expect: 100-continue\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 413"), raw[:100]
    assert b"100 Continue" not in raw


@pytest.mark.parametrize("length,said", [
    (b"-1", "is not a number of bytes"), (b"abc", "is not a number of bytes"),
    (b"1e3", "is not a number of bytes"), (b"0x10", "is not a number of bytes"),
    (b"\xd9\xa1", "is not a number of bytes"), (b"", "is not a number of bytes"),
])
def test_a_content_length_that_is_no_number_is_a_400(host, length, said):
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nab",
            400, said, host)


def test_content_lengths_that_disagree_or_come_with_chunked_are_400s(host):
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3"
            b"\r\n\r\nabc", 400, "disagree", host)
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400, "not both", host)
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400,
            "'gzip' is not supported", host)


def test_a_body_shorter_than_declared_is_a_400_when_the_client_stops(host):
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this", 400,
            "ended after 9 of the 100 bytes", host)


def test_a_body_that_stops_coming_is_a_408_after_the_timeout(host):
    started = time.monotonic()
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this", 408,
            "did not arrive within 2 s", host, half_close=False)
    assert time.monotonic() - started < 8


def test_chunked_bodies(host):
    ok, _, body = answer(exchange(host, b"POST /api/echo HTTP/1.1\r\nHost: x\r\n"
                                        b"Transfer-Encoding: chunked\r\n\r\n"
                                        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"))
    assert (ok, body) == (200, b"abcde")
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz\r\nabc\r\n0\r\n\r\n", 400, "not hexadecimal", host)
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"FFFFFFFFFFFF\r\nabc", 413, "over the limit", host)
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"200\r\n" + b"x" * 512 + b"\r\n" + b"300\r\n" + b"x" * 768 + b"\r\n0\r\n\r\n",
            413, "over the limit", host)
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabcXY0\r\n\r\n", 400, "cut short", host)
    refused(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            400, "cut short", host)


@pytest.mark.parametrize("request_line,said", [
    (b"GARBAGE", "Bad request syntax"),
    (b"GET /api/health HTTP/2.0", "Invalid HTTP version"),
    (b"GET /api/health HTTP/1.1.1", "Bad request version"),
    (b"GET /api/health", "HTTP/0.9 requests are not served"),
    (b"GET /a b c HTTP/1.1", "Bad request syntax"),
    (b"\x00\x01\x02 /x HTTP/1.1 HTTP/1.1", "Bad request syntax"),
])
def test_request_lines_the_host_cannot_parse_are_400s(host, request_line, said):
    headers = refused(request_line + b"\r\nHost: x\r\n\r\n", 400, said, host)
    assert headers["connection"] == "close"


def test_overlong_targets_and_headers_are_4xx_not_drops(host):
    raw = exchange(host, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")
    assert answer(raw)[0] == 414
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(120))
    assert answer(exchange(host, b"GET /api/health HTTP/1.1\r\n" + many + b"\r\n"))[0] == 431
    assert answer(exchange(host, b"GET /api/health HTTP/1.1\r\nX: " + b"a" * 70_000
                           + b"\r\n\r\n"))[0] == 431


@pytest.mark.parametrize("request_line,status", [
    (b"FOO /api/health HTTP/1.1", 405), (b"get /api/health HTTP/1.1", 405),
    (b"PROPFIND /nowhere HTTP/1.1", 404), (b"OPTIONS * HTTP/1.1", 404),
    (b"GET http://[::1/api/health HTTP/1.1", 400),
    (b"GET http://example.test/api/health HTTP/1.1", 200),
    (b"\x00\x01\x02 \xff HTTP/1.1", 404),
])
def test_odd_methods_and_targets_are_answered_not_501(host, request_line, status):
    got, headers, body = answer(exchange(host, request_line + b"\r\nHost: x\r\n\r\n"))
    assert got == status, body
    assert json.loads(body)


def test_keep_alive_survives_a_refused_request_on_another_connection(host):
    with socket.create_connection((host.host, host.port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.count(b"HTTP/1.1 200") == 2


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(raw=st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda line, headers, body: line + b"\r\n" + headers + b"\r\n" + body,
              st.sampled_from([b"POST /api/echo HTTP/1.1", b"GET /api/health HTTP/1.1",
                               b"PUT /api/echo HTTP/1.0", b"POST /api/echo HTTP/1.1 x"]),
              st.lists(st.sampled_from([b"Content-Length: 5\r\n", b"Content-Length: 99999\r\n",
                                        b"Content-Length: -3\r\n",
                                        b"Transfer-Encoding: chunked\r\n",
                                        b"Transfer-Encoding: chunked, gzip\r\n",
                                        b"Expect: 100-continue\r\n", b"Connection: close\r\n",
                                        b"Host: \xff\r\n", b"\xff\xfe: x\r\n", b"No colon\r\n",
                                        b" folded\r\n"]), max_size=5).map(b"".join),
              st.binary(max_size=2000))))
def test_random_bytes_get_an_answer_never_a_5xx(host, raw):
    received = exchange(host, raw)
    if not raw.strip(b"\r\n"):
        assert received == b""  # no request at all: nothing to answer
        return
    if received:
        status, _, body = answer(received)
        assert status < 500, (raw[:300], received[:300])
        if status >= 400:
            assert json.loads(body)["error"]
    else:
        # Only a request line the host never saw end (no CRLF before the client stopped) may
        # go unanswered; the host still answers the next one.
        assert b"\n" not in raw, raw[:300]
    assert healthy(host)


def test_blank_lines_before_a_request_are_skipped_and_a_blank_request_line_is_a_400(host):
    got, _, body = answer(exchange(host, b"\r\n\r\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert (got, json.loads(body)) == (200, {"status": "ok"})
    refused(b" \t\x0b\r\nGARBAGE\r\n\r\n", 400, "the request line is blank", host)
