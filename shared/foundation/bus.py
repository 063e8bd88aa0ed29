"""Typed envelopes on Azure Storage queues, encoded the way host.json declares.

The queue triggers of the Functions host decode messages with host.json's `messageEncoding`
(base64 unless it says "none"); everything Gatehouse enqueues is encoded to match. An envelope
whose message would exceed the 64 KB queue limit goes through Blob storage (shared/foundation/
claims.py): every producer sends through `send`, and every consumer reads through `open`.
"""

from __future__ import annotations

import math

from shared.events import Envelope
from shared.foundation import claims
from shared.foundation.failpoints import failpoint
from shared.foundation.queues import GATEHOUSE_EVENTS, NOTIFICATIONS, REGISTRY_EVENTS  # noqa: F401
from shared.foundation.storage import (
    decode_queue_message,
    encode_queue_message,
    queue_options,
    queue_service,
)


class Bus:
    def __init__(self, connection_string: str, encoding: str | None = None):
        self._service = queue_service(connection_string)
        self.encoding = encoding or queue_options().message_encoding
        self.claims = claims.ClaimChecks(connection_string)
        self._clients: dict[str, object] = {}

    def _queue(self, name: str):
        """The queue's client, made (and the queue created) once per Bus."""
        from azure.core.exceptions import ResourceExistsError

        client = self._clients.get(name)
        if client is None:
            client = self._service.get_queue_client(name)
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            self._clients[name] = client
        return client

    def send(self, queue: str, envelope: Envelope) -> str:
        """Enqueue one envelope (through the claim check when it is too large for a queue
        message); returns the queue message id."""
        text = envelope.to_json()
        content = encode_queue_message(text, self.encoding)
        if claims.too_large(content):
            reference = self.claims.put(envelope.id, text)
            failpoint("bus.claim_uploaded")
            content = encode_queue_message(reference.to_json(), self.encoding)
        return self._queue(queue).send_message(content).id

    def resend(self, queue: str, body: bytes, delay_seconds: float) -> str:
        """Put a message's body (as a consumer received it) back on a queue, visible after
        `delay_seconds`."""
        content = encode_queue_message(body.decode("utf-8"), self.encoding)
        message = self._queue(queue).send_message(
            content, visibility_timeout=max(0, math.ceil(delay_seconds)))
        return message.id

    def open(self, body: bytes) -> bytes:
        """A received message's content: the envelope a claim-check reference names, or the
        body itself."""
        return self.claims.open(body)

    def publish(self, envelope: Envelope) -> str:
        """Announce an event Gatehouse decided; the router forwards it to its handlers."""
        return self.send(GATEHOUSE_EVENTS, envelope)

    def peek(self, queue: str, max_messages: int = 32) -> list[Envelope]:
        """The envelopes waiting on a queue, without taking them (for tests and operators)."""
        messages = self._queue(queue).peek_messages(max_messages=max_messages)
        return [Envelope.from_json(self.open(decode_queue_message(m.content, self.encoding)))
                for m in messages]

    def depth(self, queue: str) -> int:
        return self._queue(queue).get_queue_properties().approximate_message_count
