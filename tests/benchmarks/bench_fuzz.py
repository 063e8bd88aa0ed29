"""Fuzz the real local Functions host over Azurite (`make bench`): N hostile requests over every
HTTP route of the app, and raw-socket requests with malformed framing and lying Content-Length.

    python -m tests.benchmarks.bench_fuzz [--requests 10000] [--mode plain|serving|both]
                                          [--concurrency 8] [--stalls 4] [--seed 1]

`plain`: no serving backend (the monitor reads an empty payload log); `serving`: the embedded
serving endpoint configured (GATEHOUSE_SERVING_URL), its payload log read by the monitor. Both run
against a real `mlflow server` (moto's S3 for artifacts), with the webhook, Slack and
rollback-link secrets set, which the fuzzer signs with about half the time. Function-level routes
get the host's function key most of the time.

Reports the answers by status, every 5xx and every dropped connection (no complete HTTP answer),
and whether GET /api/health answers 200 afterwards; exits 1 if anything was 5xx or dropped, or
the host is not healthy after.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from shared.dev import devstack
from shared.dev.host_keys import KEY_HEADER
from shared.foundation.storage import Azurite, free_port
from tests.fuzz.hostile import BUILDERS, Secrets, fuzz_request, latin1_text

RAW_SHARE = 0.12          # of the requests: raw-socket framing cases
ANSWER_TIMEOUT = 90.0     # seconds a client waits for an answer before calling it dropped
GIVE_UP_AFTER_DROPS = 25  # a host that stopped answering: the rest is not sent
EXAMPLES_SHOWN = 8


@dataclass(frozen=True)
class Route:
    function: str
    template: str
    methods: tuple[str, ...]
    auth_level: str


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    by_route: dict[str, Counter] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)    # 5xx and drops, described
    dropped: int = 0
    skipped: int = 0                                       # not sent: the host stopped answering
    retry_later: int = 0   # 503s with Retry-After: Gatehouse's own storage or queue failed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, route: str, status: int | None, what: str) -> None:
        with self.lock:
            key = status if status is not None else "dropped"
            self.statuses[key] += 1
            self.by_route.setdefault(route, Counter())[key] += 1
            if status is None:
                self.dropped += 1
            if status is None or status >= 500:
                self.failures.append(f"{route}: {key}: {what[:300]}")

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items()
                   if isinstance(status, int) and status >= 500)


@cache
def app_routes() -> list[Route]:
    import function_app

    routes = []
    for fn in function_app.app.get_functions():
        trigger = fn.get_trigger().get_dict_repr()
        if trigger["type"] != "httpTrigger":
            continue
        methods = tuple(getattr(m, "value", m) for m in trigger.get("methods") or ["GET"])
        level = getattr(trigger.get("authLevel"), "value", trigger.get("authLevel"))
        routes.append(Route(fn.get_function_name(), trigger["route"], methods, str(level)))
    return sorted(routes, key=lambda r: r.function)


# ---- HTTP requests through http.client ----------------------------------------------------------

class Client(threading.local):
    connection: http.client.HTTPConnection | None = None


def send_route_request(port: int, client: Client, route: Route, rnd: random.Random,
                       secrets: Secrets, key: str, tally: Tally) -> None:
    request = fuzz_request(route.function, rnd, secrets)
    headers = {name: value for name, value in request.wire_headers().items()
               if name.lower() != KEY_HEADER}
    if route.auth_level != "anonymous":
        pick = rnd.random()
        if pick < 0.9:
            headers[KEY_HEADER] = key
        elif pick < 0.95:
            headers[KEY_HEADER] = latin1_text(rnd, 10)
    path = request.path(route.template)
    if client.connection is None:
        client.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_TIMEOUT)
    try:
        client.connection.request(request.method, path, body=request.body, headers=headers)
        reply = client.connection.getresponse()
        body = reply.read()
        if reply.status == 503 and reply.getheader("Retry-After"):
            tally.retry_later += 1
        tally.count(route.function, reply.status,
                    f"{request.method} {path[:200]} -> {body[:300]!r}")
    except (OSError, http.client.HTTPException) as exc:
        client.connection.close()
        client.connection = None
        tally.count(route.function, None, f"{request.method} {path[:200]}: "
                                          f"{type(exc).__name__}: {exc}")


# ---- raw-socket framing -------------------------------------------------------------------------

def raw_case(rnd: random.Random, route: Route, key: str) -> tuple[str, bytes, bool]:
    """(name, bytes to send, whether to stop sending afterwards)."""
    target = ("/api/" + route.template.replace("{", "").replace("}", "")
              + (f"?code={key}" if rnd.random() < 0.8 else ""))
    method = route.methods[0].encode()
    start = method + b" " + target.encode() + b" HTTP/1.1\r\nHost: bench\r\n"
    json_type = b"Content-Type: application/json\r\n"
    cases = {
        "huge content-length": (start + b"Content-Length: 1000000000000000\r\n\r\n"
                                + b"x" * 4096, False),
        "content-length over the limit, sent": (start + b"Content-Length: 1200000\r\n\r\n"
                                                + b"x" * 1_200_000, True),
        "negative content-length": (start + b"Content-Length: -5\r\n\r\nabc", True),
        "content-length not a number": (start + b"Content-Length: 1e3\r\n\r\nabc", True),
        "content-lengths disagree": (start + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
                                     True),
        "chunked and content-length": (start + b"Content-Length: 3\r\nTransfer-Encoding: "
                                       b"chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", True),
        "transfer-encoding gzip": (start + b"Transfer-Encoding: gzip\r\n\r\nabc", True),
        "body shorter than declared": (start + json_type + b"Content-Length: 500\r\n\r\n{\"a\":",
                                       True),
        "chunked": (start + json_type + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                    True),
        "chunked, bad size": (start + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
                              True),
        "chunked, endless size": (start + b"Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\nab",
                                  True),
        "chunked, cut short": (start + b"Transfer-Encoding: chunked\r\n\r\n10\r\nab", True),
        "expect 100-continue, huge": (start + b"Content-Length: 99999999\r\n"
                                      b"Expect: 100-continue\r\n\r\n", True),
        "garbage request line": (b"GARBAGE\r\n\r\n", True),
        "HTTP/2.0": (method + b" " + target.encode() + b" HTTP/2.0\r\n\r\n", True),
        "HTTP/0.9": (b"GET " + target.encode() + b"\r\n", True),
        "overlong target": (b"GET /api/" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", True),
        "too many headers": (start + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
                             True),
        "odd method": (b"PROPFIND " + target.encode() + b" HTTP/1.1\r\nHost: b\r\n\r\n", True),
        "bad IPv6 target": (b"GET http://[::1/api/health HTTP/1.1\r\nHost: b\r\n\r\n", True),
        "non-latin header bytes": (start + b"X-\xff: \xfe\xfd\r\nContent-Length: 2\r\n\r\n{}",
                                   True),
        "random bytes": (rnd.randbytes(rnd.choice([5, 200, 3000])) + b"\r\n\r\n", True),
        "pipelined pair": (start + b"Content-Length: 0\r\n\r\n" + start
                           + b"Content-Length: 0\r\nConnection: close\r\n\r\n", True),
    }
    name = rnd.choice(sorted(cases))
    raw, half_close = cases[name]
    return name, raw, half_close


def first_status(raw: bytes) -> int | None:
    """The status of the first complete HTTP answer in `raw` (None: there is none)."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator or not head.startswith(b"HTTP/1."):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:])}
    if len(rest) < int(headers.get("content-length", "0")):
        return None
    return int(lines[0].split()[1])


def send_raw(port: int, rnd: random.Random, route: Route, key: str, tally: Tally) -> None:
    name, raw, half_close = raw_case(rnd, route, key)
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
            try:
                sock.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the host answered and closed before taking it all: read the answer
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            while first_status(received) is None:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
    except OSError as exc:
        if first_status(received) is None:
            tally.count(f"raw: {name}", None, f"{type(exc).__name__}: {exc}")
            return
    tally.count(f"raw: {name}", first_status(received), repr(received[:300]))


def stall(port: int, tally: Tally) -> None:
    """A client that declares a body and stops sending it: the host must answer 408."""
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
            sock.sendall(b"POST /api/registry/mlflow HTTP/1.1\r\nHost: b\r\nContent-Length: 100"
                         b"\r\n\r\n{\"entity\":")
            while first_status(received) is None:
                data = sock.recv(65536)
                if not data:
                    break
                received += data
    except OSError as exc:
        received += f" ({type(exc).__name__})".encode()
    tally.count("raw: stalled body", first_status(received), repr(received[:300]))


# ---- the run ------------------------------------------------------------------------------------

def healthy(url: str) -> bool:
    try:
        connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        connection.request("GET", "/api/health")
        reply = connection.getresponse()
        return reply.status == 200 and json.loads(reply.read())["status"] == "ok"
    except (OSError, ValueError, http.client.HTTPException):
        return False


def fuzz(host: devstack.FunctionHost, requests: int, concurrency: int, stalls: int,
         seed: int) -> Tally:
    routes = app_routes()
    missing = sorted(set(BUILDERS) - {r.function for r in routes})
    if missing:
        raise SystemExit(f"the fuzzer knows routes the app does not have: {missing}")
    secrets, tally, client = Secrets(), Tally(), Client()
    stallers = [threading.Thread(target=stall, args=(host.port, tally)) for _ in range(stalls)]
    for thread in stallers:
        thread.start()

    def one(index: int) -> None:
        if tally.dropped >= GIVE_UP_AFTER_DROPS:
            tally.skipped += 1
            return
        rnd = random.Random(seed * 1_000_003 + index)
        route = routes[index % len(routes)]
        if rnd.random() < RAW_SHARE:
            send_raw(host.port, rnd, route, host.function_key, tally)
        else:
            send_route_request(host.port, client, route, rnd, secrets, host.function_key, tally)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(max(0, requests - stalls))))
    for thread in stallers:
        thread.join()
    return tally


def report(mode: str, tally: Tally, elapsed: float, healthy_after: bool, alive: bool) -> bool:
    total = sum(tally.statuses.values())
    print(f"\n== {mode}: {total} requests in {elapsed:.0f}s ==")
    print("by status: " + ", ".join(f"{status}: {n}" for status, n in
                                    sorted(tally.statuses.items(), key=lambda kv: str(kv[0]))))
    for route, counts in sorted(tally.by_route.items()):
        print(f"  {route:38s} " + ", ".join(f"{s}: {n}" for s, n in
                                            sorted(counts.items(), key=lambda kv: str(kv[0]))))
    transient = (f" ({tally.retry_later} of them 503 with Retry-After: storage or queue failed)"
                 if tally.retry_later else "")
    print(f"5xx: {tally.server_errors}{transient}   dropped connections: {tally.dropped}   "
          f"GET /api/health after: {'200' if healthy_after else 'FAILED'}   "
          f"host process alive: {alive}")
    if tally.skipped:
        print(f"not sent: {tally.skipped} (gave up after {GIVE_UP_AFTER_DROPS} dropped "
              f"connections: the host stopped answering)")
    for failure in tally.failures[:EXAMPLES_SHOWN]:
        print(f"  ! {failure}")
    return (tally.server_errors == 0 and tally.dropped == 0 and not tally.skipped
            and healthy_after and alive)


def run_mode(mode: str, work: Path, azurite: Azurite, moto_url: str, mlflow_url: str,
             args: argparse.Namespace, seed: int) -> bool:
    from shared.serving.payload_log import PayloadLog

    work = work / mode
    work.mkdir()
    payload_log = work / "payloads.sqlite"
    PayloadLog(payload_log)
    env = {**devstack.mlflow_client_env(moto_url), **Secrets().environment(),
           "MLFLOW_TRACKING_URI": mlflow_url, "GATEHOUSE_PAYLOAD_LOG": str(payload_log),
           "GATEHOUSE_OUTBOX_PATH": str(work / "outbox.jsonl"),
           "GATEHOUSE_RETRAINING_RUNS_DIR": str(work / "retraining")}
    serving = None
    if mode == "serving":
        port = free_port()
        serving = devstack.ManagedProcess(
            "serving", [sys.executable, "-m", "shared.serving.embedded", "--port", str(port),
                        "--payload-log", str(payload_log)],
            devstack.mlflow_client_env(moto_url) | {"MLFLOW_TRACKING_URI": mlflow_url}, port,
            work).start()
        env["GATEHOUSE_SERVING_URL"] = serving.url
    host = devstack.start_function_host(work, azurite.connection_string, env)
    try:
        started = time.monotonic()
        tally = fuzz(host, args.requests, args.concurrency, args.stalls, seed)
        elapsed = time.monotonic() - started
        healthy_after = healthy(host.url)
        alive = host.process is not None and host.process.poll() is None
    finally:
        host.stop()
        if serving is not None:
            serving.stop()
    print(f"(host log: {host.log_path})")
    return report(mode, tally, elapsed, healthy_after, alive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bench_fuzz",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per mode")
    parser.add_argument("--mode", choices=("plain", "serving", "both"), default="both")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stalls", type=int, default=4,
                        help="clients that stop sending their body (each waits for its 408)")
    parser.add_argument("--seed", type=int, default=1, help="of the first mode; the next: +1")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gatehouse-bench-fuzz-"))
    azurite = Azurite(str(work / "azurite")).start()
    moto = devstack.start_moto(work)
    mlflow_server = devstack.start_mlflow(work, moto.url)
    try:
        modes = ("plain", "serving") if args.mode == "both" else (args.mode,)
        results = [run_mode(mode, work, azurite, moto.url, mlflow_server.url, args, args.seed + n)
                   for n, mode in enumerate(modes)]
    finally:
        mlflow_server.stop()
        moto.stop()
        azurite.stop()
    print("\nbench_fuzz: " + ("OK: no 5xx, no dropped connection, host healthy" if all(results)
                              else "FAILED"))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
