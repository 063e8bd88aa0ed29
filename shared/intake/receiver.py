"""Registry webhook intake: size, signature, shape, enqueue — in that order.

Answers are `shared.foundation.http.Reply`s, so the HTTP function stays a thin shell:
 - 202 once the event is on the queue, for a first delivery and for its retries alike;
 - 200 for an ignored event type;
 - 401 bad or missing signature, stale or future timestamp; 400 / 413 / 415 bad input;
 - 503 with a short Retry-After only when the queue cannot be reached, so the sender retries.

Nothing accepted is lost, nothing is doubled, in one storage round trip: the receiver claims and
remembers nothing. It answers 202 only once the event is on the queue, so a crash before that
leaves the sender to retry and a crash after it has lost nothing. A retry is enqueued again under
the same event id (derived from MLflow's delivery id, or from the Databricks body), and the router,
which forwards each event id once (`process_once`), drops the repeat. An event too large for a
queue message goes through the Bus's claim check (shared/foundation/claims.py).

Retry-After is a tenth of the signed timestamp's tolerance, at most 30 s: MLflow re-sends the same
signed bytes, which must still be fresh when they arrive again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Literal, Protocol

from shared.events import Envelope
from shared.foundation.failpoints import failpoint
from shared.foundation.http import (
    BodyError,
    Reply,
    content_type_problem,
    error_reply,
    too_large,
    unavailable,
)
from shared.foundation.queues import REGISTRY_EVENTS
from shared.foundation.settings import Settings
from shared.intake import inbound, signatures

log = logging.getLogger("gatehouse.receiver")
Sender = Literal["mlflow", "databricks", "forwarded"]
EVENT_SOURCES = {"mlflow": "/gatehouse/registry/mlflow",
                 "databricks": "/gatehouse/registry/databricks",
                 "forwarded": "/gatehouse/registry/forwarded"}
PARSERS = {"mlflow": inbound.parse_mlflow, "databricks": inbound.parse_databricks,
           "forwarded": inbound.parse_forwarded}
MAX_RETRY_AFTER = 30.0


class Queue(Protocol):
    def send(self, queue: str, envelope: Envelope) -> str: ...


def retry_after_seconds(settings: Settings) -> float:
    """How long a sender should wait before retrying: well inside the timestamp tolerance, so
    the re-sent signed request is still fresh."""
    return max(1.0, min(MAX_RETRY_AFTER, settings.webhook_tolerance_seconds / 10))


def receive(sender: Sender, headers: Mapping[str, str], body: bytes, settings: Settings,
            queue: Queue, now: float | None = None) -> Reply:
    now = time.time() if now is None else now
    if len(body) > settings.max_body_bytes:
        return too_large(len(body), settings.max_body_bytes)
    try:
        if sender == "mlflow":
            delivery_id, _ = signatures.mlflow_delivery(
                headers, body, settings.mlflow_webhook_secret, now,
                settings.webhook_tolerance_seconds)
        elif sender == "forwarded":
            delivery_id, _ = signatures.mlflow_delivery(
                headers, body, settings.forwarder_secret, now,
                settings.webhook_tolerance_seconds, signatures.GATEHOUSE_HEADERS)
        else:
            signatures.databricks_delivery(headers, body, settings.databricks_webhook_secret)
            delivery_id = None
    except signatures.SignatureError as exc:
        log.warning("refused a %s webhook: %s", sender, exc)
        return error_reply(401, f"webhook not authenticated: {exc}")
    problem = content_type_problem(signatures.header(headers, "content-type"))
    if problem:
        return error_reply(415, problem)
    parsed: inbound.Accepted | inbound.Ignored
    try:
        if sender == "databricks":  # its time is in the body: checked like MLflow's header
            parsed = inbound.parse_databricks(body, now=now,
                                              tolerance_seconds=settings.webhook_tolerance_seconds)
        else:
            parsed = PARSERS[sender](body)
    except BodyError as exc:
        log.info("rejected a %s webhook: %s", sender, exc.message)
        return exc.reply()
    except signatures.SignatureError as exc:
        log.warning("refused a %s webhook: %s", sender, exc)
        return error_reply(401, f"webhook not authenticated: {exc}")
    if isinstance(parsed, inbound.Ignored):
        return Reply(200, {"status": "ignored", "reason": parsed.reason})

    # Retries of one delivery repeat its id (MLflow) or its exact body (Databricks).
    dedupe_key = delivery_id or hashlib.sha256(body).hexdigest()
    envelope = Envelope.wrap(parsed.payload, source=EVENT_SOURCES[sender],
                             dedupe_key=dedupe_key, time=parsed.occurred_at)
    return _enqueue(sender, envelope, queue, settings)


def _enqueue(sender: Sender, envelope: Envelope, queue: Queue, settings: Settings) -> Reply:
    try:
        queue.send(REGISTRY_EVENTS, envelope)
    except Exception:
        log.exception("could not enqueue %s from %s; the sender will retry", envelope.id, sender)
        return unavailable("event queue unavailable; retry shortly", retry_after_seconds(settings))
    failpoint("receiver.enqueued")
    log.info("accepted %s %s (%s)", envelope.type, envelope.id, envelope.subject)
    return Reply(202, {"status": "accepted", "event_id": envelope.id, "type": envelope.type})
