"""What the two Databricks test peers share: Databricks' error codes, the rejection they raise,
and an HTTP server on a free loopback port run from a thread. Each peer supplies `_handler()`."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

ERROR_CODES = {400: "INVALID_PARAMETER_VALUE", 401: "UNAUTHENTICATED",
               404: "RESOURCE_DOES_NOT_EXIST", 405: "ENDPOINT_NOT_FOUND",
               409: "RESOURCE_CONFLICT", 429: "REQUEST_LIMIT_EXCEEDED", 500: "INTERNAL_ERROR",
               503: "TEMPORARILY_UNAVAILABLE"}


class Rejected(Exception):
    """What Databricks would refuse, with the status it would answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class LoopbackPeer:
    """Subclasses define `_handler()`, returning the BaseHTTPRequestHandler class to serve."""

    def __init__(self):
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
