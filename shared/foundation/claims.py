"""Claim check: an event too large for a queue message travels through Blob storage.

A storage queue message holds at most 64 KB once encoded (48 KB of JSON under base64), while a
signed webhook may be up to `max_body_bytes`. The Bus uploads such an envelope to the container
`gatehouse-claims` under a name derived from the event id and the content's SHA-256, so a retried
producer overwrites the same blob with the same bytes, and puts a small reference on the queue:

    {"gatehouseClaimCheck": {"container": ..., "blob": ..., "bytes": ..., "sha256": ...}}

Every consumer reads messages through `handling.consume` (or `Bus.peek`), which swaps a
reference for the blob's content. Blobs are not deleted by consumers (one event may sit on several
queues at once); a lifecycle rule on the container removes old ones. The Blob SDK is imported only
when a large message is sent or received.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from shared.foundation.storage import QUEUE_MESSAGE_LIMIT

CONTAINER = "gatehouse-claims"
MARKER = "gatehouseClaimCheck"
_PREFIX = b'{"' + MARKER.encode() + b'"'
_REFERENCE_MAX = 2048  # a reference is a few hundred bytes; anything longer is a real message


def too_large(encoded: str) -> bool:
    """Whether an encoded queue message exceeds what a storage queue accepts."""
    return len(encoded.encode("utf-8")) > QUEUE_MESSAGE_LIMIT


@dataclass(frozen=True)
class Reference:
    container: str
    blob: str
    size: int
    sha256: str

    def to_json(self) -> str:
        return json.dumps({MARKER: {"container": self.container, "blob": self.blob,
                                    "bytes": self.size, "sha256": self.sha256}})

    @classmethod
    def for_content(cls, container: str, event_id: str, content: bytes) -> Reference:
        digest = hashlib.sha256(content).hexdigest()
        return cls(container, f"{event_id}/{digest}", len(content), digest)


def reference_in(body: bytes) -> Reference | None:
    """The claim-check reference a queue message carries, or None for an ordinary message."""
    stripped = body.strip()
    if len(stripped) > _REFERENCE_MAX or not stripped.startswith(_PREFIX):
        return None
    try:
        fields = json.loads(stripped)[MARKER]
        return Reference(str(fields["container"]), str(fields["blob"]), int(fields["bytes"]),
                         str(fields["sha256"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed claim-check reference: {exc}") from None


class ClaimCheckError(RuntimeError):
    """The blob a reference names is not the content it was made for."""


class ClaimChecks:
    """The claim-check container on one storage account."""

    def __init__(self, connection_string: str, container: str = CONTAINER):
        self._connection_string = connection_string
        self._container_name = container
        self._container = None

    def _client(self):
        if self._container is None:
            from azure.core.exceptions import ResourceExistsError

            from shared.foundation.storage import blob_service

            container = blob_service(self._connection_string).get_container_client(
                self._container_name)
            try:
                container.create_container()
            except ResourceExistsError:
                pass
            self._container = container
        return self._container

    def put(self, event_id: str, text: str) -> Reference:
        """Upload the message (idempotent: the same content gets the same name)."""
        content = text.encode("utf-8")
        reference = Reference.for_content(self._container_name, event_id, content)
        self._client().upload_blob(reference.blob, content, overwrite=True)
        return reference

    def get(self, reference: Reference) -> bytes:
        from shared.foundation.storage import blob_service

        container = (self._client() if reference.container == self._container_name
                     else blob_service(self._connection_string).get_container_client(
                         reference.container))
        content: bytes = container.download_blob(reference.blob).readall()
        if hashlib.sha256(content).hexdigest() != reference.sha256:
            raise ClaimCheckError(f"blob {reference.container}/{reference.blob} does not hold "
                                  f"the content its reference was made for")
        return content

    def open(self, body: bytes) -> bytes:
        """The message's content: the blob a reference names, or the body itself."""
        reference = reference_in(body)
        return body if reference is None else self.get(reference)
