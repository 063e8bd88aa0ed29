"""Registry webhook intake: size, signature, shape, dedupe, enqueue — in that order.

Answers are `shared.foundation.http.Reply`s, so the HTTP function stays a thin shell:
 - 202 accepted and enqueued; 200 for a duplicate delivery or an ignored event type;
 - 401 bad or missing signature, stale or future timestamp; 400 / 413 / 415 bad input;
 - 503 with Retry-After only when our own storage fails or the same delivery is mid-flight,
   so the sender retries and nothing it sent is lost.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from typing import Literal, Protocol

from shared.events import Envelope
from shared.foundation.http import (
    BodyError,
    Reply,
    content_type_problem,
    error_reply,
    too_large,
    unavailable,
)
from shared.foundation.idempotency import AlreadyCompleted, AlreadyInProgress, Claim
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


class Queue(Protocol):
    def send(self, queue: str, envelope: Envelope) -> str: ...


class Dedupe(Protocol):
    def claim(self, scope: str, key: str) -> Claim: ...
    def complete(self, claim: Claim, result: dict | None = None,
                 ttl_seconds: float = ...) -> None: ...
    def release(self, claim: Claim) -> None: ...


def receive(sender: Sender, headers: Mapping[str, str], body: bytes, settings: Settings,
            queue: Queue, dedupe: Dedupe, now: float | None = None) -> Reply:
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
    return _enqueue_once(sender, dedupe_key, envelope, queue, dedupe, settings)


def _enqueue_once(sender: Sender, dedupe_key: str, envelope: Envelope, queue: Queue,
                  dedupe: Dedupe, settings: Settings) -> Reply:
    try:
        claim = dedupe.claim(f"delivery-{sender}", dedupe_key)
    except AlreadyCompleted as done:
        event_id = (done.result or {}).get("event_id", envelope.id)
        return Reply(200, {"status": "duplicate", "event_id": event_id})
    except AlreadyInProgress as busy:
        return unavailable("this delivery is being processed; retry shortly", busy.retry_after)
    except Exception:
        log.exception("state store unavailable while receiving a %s webhook", sender)
        return unavailable("state store unavailable; retry shortly")
    try:
        queue.send(REGISTRY_EVENTS, envelope)
    except Exception:
        dedupe.release(claim)
        log.exception("could not enqueue %s; the sender will retry", envelope.id)
        return unavailable("event queue unavailable; retry shortly")
    try:
        dedupe.complete(claim, {"event_id": envelope.id}, ttl_seconds=settings.delivery_ttl_seconds)
    except Exception:
        # The event is on the queue; a retry may enqueue it again with the same id, and
        # consumers drop the repeat. Still a success for the sender.
        log.exception("could not mark delivery of %s complete", envelope.id)
    log.info("accepted %s %s (%s)", envelope.type, envelope.id, envelope.subject)
    return Reply(202, {"status": "accepted", "event_id": envelope.id, "type": envelope.type})
