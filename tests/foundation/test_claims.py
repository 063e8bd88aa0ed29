"""The claim check: the size threshold, and envelopes on both sides of it through Azurite."""

from __future__ import annotations

import uuid

import pytest

from shared.events import Envelope, ModelVersionCreated
from shared.foundation import claims
from shared.foundation.bus import Bus
from shared.foundation.storage import (
    QUEUE_MESSAGE_LIMIT,
    decode_queue_message,
    encode_queue_message,
)

BASE64_PAYLOAD_LIMIT = QUEUE_MESSAGE_LIMIT * 3 // 4  # 48 KB of JSON fill 64 KB of base64


@pytest.mark.parametrize("size,claim_checked", [
    (BASE64_PAYLOAD_LIMIT - 1, False), (BASE64_PAYLOAD_LIMIT, False),
    (BASE64_PAYLOAD_LIMIT + 1, True), (200_000, True)])
def test_threshold_is_the_encoded_size_under_base64(size, claim_checked):
    assert claims.too_large(encode_queue_message("x" * size, "base64")) is claim_checked


def test_threshold_counts_utf8_bytes_without_encoding():
    assert not claims.too_large("x" * QUEUE_MESSAGE_LIMIT)
    assert claims.too_large("é" * (QUEUE_MESSAGE_LIMIT // 2 + 1))


def test_a_reference_is_recognised_and_nothing_else_is():
    reference = claims.Reference.for_content(claims.CONTAINER, "event-1", b"{}")
    assert claims.reference_in(reference.to_json().encode()) == reference
    assert reference.blob == f"event-1/{reference.sha256}"
    envelope = Envelope.wrap(ModelVersionCreated(model_name="m", version="1"), source="/tests")
    assert claims.reference_in(envelope.to_json().encode()) is None
    assert claims.reference_in(b"not json at all") is None
    with pytest.raises(ValueError, match="malformed claim-check reference"):
        claims.reference_in(b'{"gatehouseClaimCheck": {"blob": "x"}}')


def envelope_of_size(size: int) -> Envelope:
    """An envelope whose JSON is exactly `size` bytes."""
    envelope = Envelope.wrap(ModelVersionCreated(model_name="sized", version="1", description=""),
                             source="/tests", dedupe_key=uuid.uuid4().hex)
    padding = size - len(envelope.to_json())
    data = envelope.data.model_copy(update={"description": "d" * padding})
    sized = envelope.model_copy(update={"data": data})
    assert len(sized.to_json()) == size
    return sized


@pytest.mark.parametrize("size,claim_checked", [
    (BASE64_PAYLOAD_LIMIT, False), (BASE64_PAYLOAD_LIMIT + 1, True), (200_000, True)])
def test_envelopes_either_side_of_the_limit_arrive_whole(storage, size, claim_checked):
    bus = Bus(storage, encoding="base64")
    queue = f"claims-{uuid.uuid4().hex[:10]}"
    envelope = envelope_of_size(size)
    bus.send(queue, envelope)
    bus.send(queue, envelope)  # a retried producer: the same blob, overwritten with the same bytes
    [message, _] = bus._queue(queue).peek_messages(max_messages=2)
    carried = claims.reference_in(decode_queue_message(message.content, bus.encoding))
    assert (carried is not None) is claim_checked
    assert [e.to_json() for e in bus.peek(queue)] == [envelope.to_json()] * 2


def test_a_blob_that_does_not_match_its_reference_is_refused(storage):
    checks = claims.ClaimChecks(storage)
    reference = checks.put(f"event-{uuid.uuid4().hex[:8]}", '{"a": 1}')
    assert checks.get(reference) == b'{"a": 1}'
    checks._client().upload_blob(reference.blob, b'{"a": 2}', overwrite=True)
    with pytest.raises(claims.ClaimCheckError, match="does not hold the content"):
        checks.open(reference.to_json().encode())
