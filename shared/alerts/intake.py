"""Alert intake: source, size, token, shape, then each alert enqueued once.

Answers (shared.foundation.http.Reply):
 - 202 when at least one alert was published; 200 when every alert was a repeat, a resolution
   of nothing open, or a state that says nothing (all listed per alert in the body);
 - 404 unknown source; 401 missing or wrong token; 400 / 413 / 415 bad input, with the problem
   (413 also for more alerts than GATEHOUSE_MAX_ALERTS_PER_REQUEST in one request);
 - 503 with Retry-After only when Gatehouse's own storage fails, so the sender retries.

Authentication: when GATEHOUSE_ALERT_TOKEN_<SOURCE> is set (e.g. GATEHOUSE_ALERT_TOKEN_ALERTMANAGER,
GATEHOUSE_ALERT_TOKEN_AZURE_MONITOR), the request must carry it in `X-Gatehouse-Alert-Token` or
as `Authorization: Bearer <token>` (Alertmanager's http_config `authorization`); compared in
constant time. The function key protects the route in Azure either way.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Protocol

from shared import alerts
from shared.alerts.common import InboundAlert
from shared.alerts.store import CLOSED, OPEN, OpenAlerts
from shared.events import Envelope
from shared.foundation import runtime
from shared.foundation.failpoints import failpoint
from shared.foundation.http import (
    BodyError,
    Reply,
    content_type_problem,
    error_reply,
    too_large,
    unavailable,
)
from shared.foundation.idempotency import AlreadyCompleted, AlreadyInProgress
from shared.foundation.settings import Settings
from shared.intake.signatures import header

log = logging.getLogger("gatehouse.alerts")
TOKEN_HEADER = "x-gatehouse-alert-token"
DEDUPE_SCOPE = "alert-intake"
STORAGE_UNAVAILABLE = "Gatehouse storage unavailable; retry shortly"


class Publisher(Protocol):
    def publish(self, envelope: Envelope) -> str: ...


def token_setting(source: str) -> str:
    return "GATEHOUSE_ALERT_TOKEN_" + source.upper().replace("-", "_")


def presented_token(headers: Mapping[str, str]) -> str | None:
    explicit = header(headers, TOKEN_HEADER)
    if explicit:
        return explicit.strip()
    authorization = (header(headers, "authorization") or "").strip()
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def authenticate(source: str, headers: Mapping[str, str], settings: Settings) -> str | None:
    """None when the request may pass; otherwise what is wrong (for a 401)."""
    expected = settings.alert_token(source)
    if not expected:
        return None
    presented = presented_token(headers)
    if presented is None:
        return (f"missing alert token: send it in X-Gatehouse-Alert-Token or as "
                f"'Authorization: Bearer <token>' ({token_setting(source)} is set)")
    if not hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8")):
        return "alert token does not match"
    return None


def unknown_source(source: str) -> Reply:
    return error_reply(404, f"unknown alert source {source!r}; known sources: "
                       + ", ".join(alerts.SOURCES))


def too_many(count: int, limit: int) -> Reply:
    return error_reply(413, f"{count} alerts in one request; at most {limit} are taken per request "
                            f"(GATEHOUSE_MAX_ALERTS_PER_REQUEST; Alertmanager: set max_alerts)",
                       [f"alerts: {count} alerts, at most {limit}"])


def receive(source: str, headers: Mapping[str, str], body: bytes, *, max_body_bytes: int,
            bus: Publisher, dedupe, open_alerts: OpenAlerts,
            settings: Settings | None = None) -> Reply:
    settings = runtime.settings() if settings is None else settings
    if source not in alerts.SOURCES:
        return unknown_source(source)
    if len(body) > max_body_bytes:
        return too_large(len(body), max_body_bytes)
    refused = authenticate(source, headers, settings)
    if refused:
        log.warning("refused a %s alert: %s", source, refused)
        return error_reply(401, refused)
    problem = content_type_problem(header(headers, "content-type"))
    if problem:
        return error_reply(415, problem)
    try:
        batch = alerts.parse_alerts(source, body)
    except BodyError as exc:
        log.info("rejected a %s alert: %s", source, exc.message)
        return exc.reply()
    if len(batch.alerts) > settings.max_alerts_per_request:
        return too_many(len(batch.alerts), settings.max_alerts_per_request)
    outcomes = []
    for inbound in batch.alerts:
        try:
            outcomes.append(_take(source, inbound, bus, dedupe, open_alerts))
        except AlreadyInProgress as busy:
            return unavailable("this alert is being processed; retry shortly", busy.retry_after)
        except Exception:
            log.exception("could not take a %s alert %s; the sender will retry", source,
                          inbound.alert.fingerprint)
            return unavailable(STORAGE_UNAVAILABLE)
    failpoint("alerts.batch_taken")
    published = any(o["outcome"] == "accepted" for o in outcomes)
    reply: dict[str, object] = {"status": "accepted" if published else "nothing new",
                                "alerts": outcomes}
    if batch.ignored:
        reply["ignored"] = batch.ignored
    return Reply(202 if published else 200, reply)


def _take(source: str, inbound: InboundAlert, bus: Publisher, dedupe,
          open_alerts: OpenAlerts) -> dict:
    alert = inbound.alert
    summary = {"fingerprint": alert.fingerprint, "status": alert.status,
               "alert_kind": alert.alert_kind.value}
    try:
        claim = dedupe.claim(DEDUPE_SCOPE, inbound.dedupe_key)
    except AlreadyCompleted as done:
        return {**summary, **(done.result or {}), "outcome": "duplicate"}
    try:
        result = _act(source, inbound, bus, open_alerts)
    except BaseException:
        dedupe.release(claim)
        raise
    try:
        dedupe.complete(claim, result)
    except Exception:
        # Published already: a retry publishes the same event id again, which consumers drop.
        log.exception("could not mark alert %s taken", inbound.dedupe_key)
    failpoint("alerts.claim_completed")
    return {**summary, **result}


def _act(source: str, inbound: InboundAlert, bus: Publisher, open_alerts: OpenAlerts) -> dict:
    alert = inbound.alert
    record = open_alerts.get(alert.fingerprint)
    if alert.status == "resolved" and (record is None or not record.is_open):
        # Nothing of ours is open: remember the resolution, so a late firing of the same
        # episode is not taken for a new one.
        open_alerts.put(alert.fingerprint, CLOSED, inbound.started, "")
        failpoint("alerts.resolution_recorded")
        return {"outcome": "acknowledged", "reason": "no open alert with this fingerprint"}
    if (alert.status == "firing" and record is not None and record.state == CLOSED
            and record.started == inbound.started):
        return {"outcome": "acknowledged", "reason": "this alert was resolved already"}
    envelope = Envelope.wrap(alert, source=f"/gatehouse/alerts/{source}",
                             dedupe_key=inbound.dedupe_key, time=inbound.occurred_at)
    bus.publish(envelope)
    failpoint("alerts.published")
    open_alerts.put(alert.fingerprint, OPEN if alert.status == "firing" else CLOSED,
                    inbound.started, envelope.id,
                    {"source": source, "model_name": alert.model_name,
                     "endpoint": alert.endpoint, "alert_kind": alert.alert_kind.value})
    failpoint("alerts.state_recorded")
    log.info("alert %s %s (%s) published as %s", alert.fingerprint, alert.status,
             alert.alert_kind.value, envelope.id)
    return {"outcome": "accepted", "event_id": envelope.id}
