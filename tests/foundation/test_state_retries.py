"""A write sent on a connection the server drops is retried, on a real Azurite behind a proxy that
resets the first connection after reading its request (what Azurite does to a keep-alive connection
it closed as idle while the client was sending on it)."""

from __future__ import annotations

import re
import socket
import struct
import threading
import uuid

import pytest

from shared.foundation.state import StateTable


class ResettingProxy:
    """Forwards TCP to `target`; while `resets` is above zero, a request starting with `method` is
    read and its connection reset, unanswered and never forwarded."""

    def __init__(self, target: tuple[str, int], method: bytes = b"POST "):
        self.target, self.method, self.resets = target, method, 0
        self.reset_requests: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                if self.resets > 0 and data.startswith(self.method):
                    self.resets -= 1
                    self.reset_requests.append(data)
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                    break
                upstream.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        self._close(source, sink)

    @staticmethod
    def _close(*ends: socket.socket) -> None:
        for end in ends:
            try:
                end.close()
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def table_behind_proxy(storage):
    endpoint = re.search(r"TableEndpoint=http://([^:]+):(\d+)/", storage)
    assert endpoint, storage
    name = f"retries{uuid.uuid4().hex[:16]}"
    proxy = ResettingProxy((endpoint.group(1), int(endpoint.group(2))))
    proxied = storage.replace(f"{endpoint.group(1)}:{endpoint.group(2)}",
                              f"127.0.0.1:{proxy.port}")
    table = StateTable(proxied, name)
    yield table, proxy
    proxy.close()


def test_an_insert_whose_connection_is_reset_is_retried_and_stored(table_behind_proxy):
    table, proxy = table_behind_proxy
    proxy.resets = 1
    etag = table.insert("p", "r", {"name": "fraud"})
    assert proxy.reset_requests and proxy.reset_requests[-1].startswith(b"POST ")
    stored = table.get("p", "r")
    assert stored is not None and stored.properties == {"name": "fraud"} and stored.etag == etag
