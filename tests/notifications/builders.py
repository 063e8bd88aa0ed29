"""Events of a rollout, as their producers emit them, and what the router derives from them."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from shared import events
from shared.channels.messages import NOTIFY_SOURCE, notification_for
from shared.events import Decision, Envelope, NotificationRequested

JUDGE = Decision(actor="gatehouse", reason="error rate 4.1% vs 0.9% (one-sided z-test p=0.0004)",
                 metrics={"error_rate": 0.041, "champion_error_rate": 0.009, "p_value": 0.0004})


def notification_envelope(payload, source: str = "/gatehouse/test") -> Envelope:
    """The NotificationRequested the router would derive from this event."""
    event = Envelope.wrap(payload, source=source)
    note = notification_for(event)
    assert isinstance(note, NotificationRequested), f"{payload.kind} is not announced"
    return event.derived(note, source=NOTIFY_SOURCE)


def canary_started(model: str, endpoint: str, version: str = "2") -> events.CanaryStarted:
    return events.CanaryStarted(model_name=model, version=version, endpoint=endpoint,
                                champion_version="1", traffic_percent=5,
                                decision=Decision(actor="gatehouse", reason="gates passed"))


def traffic_ramped(model: str, endpoint: str, version: str = "2") -> events.TrafficRamped:
    return events.TrafficRamped(model_name=model, version=version, endpoint=endpoint,
                                from_percent=5, to_percent=25,
                                decision=Decision(actor="gatehouse", reason="healthy at 5%"))


def rollback_requested(model: str, endpoint: str, version: str = "2",
                       decision: Decision = JUDGE) -> events.RollbackRequested:
    return events.RollbackRequested(model_name=model, version=version, endpoint=endpoint,
                                    decision=decision)


def rollback_completed(model: str, endpoint: str, version: str = "2",
                       actor: str = "gatehouse") -> events.RollbackCompleted:
    return events.RollbackCompleted(model_name=model, version=version, endpoint=endpoint,
                                    restored_version="1",
                                    decision=Decision(actor=actor, reason="rolled back"))


def stalled(model: str, endpoint: str, *, eta: float | None = 7200.0,
            on_stall: str = "hold") -> events.RolloutStalled:
    return events.RolloutStalled(model_name=model, version="2", endpoint=endpoint,
                                 traffic_percent=5, held_seconds=1800,
                                 time_to_decision_seconds=eta,
                                 challenger_requests_per_minute=0.5, on_stall=on_stall,
                                 decision=Decision(actor="gatehouse", reason="no traffic"))


def alert(model: str | None, kind: str = "error_rate", *, severity: str = "critical",
          status: str = "firing", fingerprint: str = "fp-1", endpoint: str | None = None,
          version: str | None = None) -> events.MonitoringAlert:
    return events.MonitoringAlert(alert_kind=kind, source="alertmanager", model_name=model,
                                  version=version, endpoint=endpoint, severity=severity,
                                  status=status, title=f"{kind} above threshold",
                                  figures={"value": 0.07, "threshold": 0.02},
                                  fingerprint=fingerprint)


def signed_slack_request(secret: str, payload: dict, timestamp: int | None = None
                         ) -> tuple[bytes, dict]:
    """A form-encoded interaction request as Slack sends it, signed with slack-sdk's signer."""
    from slack_sdk.signature import SignatureVerifier

    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    return body, {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}


def block_actions_payload(button: dict, *, user_id: str = "U0ALICE", user_name: str = "alice",
                          channel_id: str = "C0GATEHOUSE", message_ts: str = "1.000001") -> dict:
    """What Slack posts when someone clicks `button` (a Block Kit button element)."""
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": "T0TEAM"},
        "api_app_id": "A0GATEHOUSE", "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id,
                      "is_ephemeral": False},
        "trigger_id": "1.2.3", "team": {"id": "T0TEAM", "domain": "example"},
        "channel": {"id": channel_id, "name": "gatehouse-test"},
        "response_url": "https://hooks.slack.com/actions/T0TEAM/1/abc",
        "actions": [{"type": "button", "block_id": "b1", "action_id": button["action_id"],
                     "text": button["text"], "value": button.get("value"),
                     "action_ts": f"{time.time():.6f}"}],
    }


def delivery_for(envelope: Envelope, *, ui: str | None = None, rollback_url: str | None = None,
                 repeat=None, policy=None):
    """What the Dispatcher hands a channel for this notification envelope."""
    from shared.channels import dispatch
    from shared.channels.base import Delivery
    from shared.channels.policy import NotificationPolicy

    note = envelope.data
    return Delivery(event_id=envelope.id, note=note, policy=policy or NotificationPolicy(),
                    links=dispatch.mlflow_links(note, ui),
                    rollback=dispatch.rollback_target(note), rollback_url=rollback_url,
                    repeat=repeat, now=time.time())
