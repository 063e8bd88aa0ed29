"""Slack: Block Kit messages through slack-sdk's WebClient, one thread per model version.

The first notification about a model version opens a thread; later ones are posted as replies
and the thread's first message is updated in place to show the latest state, with a *Roll back*
button while a version serves traffic and *Open in MLflow*. A repeat within the dedup window
updates the message it repeats instead of posting. Button clicks come back signed to
`POST /api/slack/actions` (functions/slack_actions.py), verified here.

Every message carries Slack message metadata naming its notification, so an attempt cut short
after its intent to send can look (`find_sent`: conversations.history, and conversations.replies
of the version's thread) for what the earlier attempt posted, instead of guessing. That needs the
bot's `channels:history` (or `groups:history`) scope and the channel's ID (configured, or learned
from an earlier post); without them the redo stays at most once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import get_args
from urllib.parse import parse_qs

from shared.channels.base import ChannelError, Delivery, RollbackTarget, event_kind
from shared.events import NotificationRequested, Registry
from shared.foundation.state import ConcurrencyConflict, Table, safe_row_key

ROLLBACK_ACTION_ID = "gatehouse_rollback"
OPEN_MLFLOW_ACTION_ID = "gatehouse_open_mlflow"
SIGNATURE_TOLERANCE_SECONDS = 300  # what slack-sdk's SignatureVerifier allows
ACTIONS_SOURCE = "/gatehouse/slack/actions"
TRANSIENT_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                    "request_timeout"}
SEVERITY_MARK = {"info": ":information_source:", "warning": ":warning:",
                 "error": ":rotating_light:", "critical": ":rotating_light:"}
HIDDEN_FACTS = {"occurred"}
METADATA_EVENT = "gatehouse_notification"
LOOKUP_MARGIN_SECONDS = 60  # clocks differ; look a little before the intent was recorded
LOOKUP_LIMIT = 200


def slack_client(token: str, base_url: str | None = None, *, backoff: float = 0.5,
                 rate_limit_retries: int = 3):
    """A WebClient that waits out 429s as Retry-After says and retries 5xx and dropped
    connections a few times."""
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

    interval = BackoffRetryIntervalCalculator(backoff_factor=backoff)
    return WebClient(
        token=token, base_url=(base_url.rstrip("/") + "/") if base_url else WebClient.BASE_URL,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=interval),
            RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            ServerErrorRetryHandler(max_retry_count=2, interval_calculator=interval)])


# ---- Block Kit (pure) ----

def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _plain(text: str, limit: int) -> dict:
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": True}


def _mrkdwn(text: str, limit: int = 3000) -> dict:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def rollback_value(target: RollbackTarget) -> str:
    return json.dumps({"model": target.model_name, "version": target.version,
                       "endpoint": target.endpoint, "registry": target.registry},
                      separators=(",", ":"), sort_keys=True)


def parse_rollback_value(value: str) -> RollbackTarget:
    try:
        fields = json.loads(value)
    except (TypeError, ValueError):
        raise ValueError("the Roll back button's value is not JSON") from None
    if not isinstance(fields, dict):
        raise ValueError("the Roll back button's value is not a JSON object")
    missing = [name for name in ("model", "version", "endpoint")
               if not isinstance(fields.get(name), str) or not fields[name]]
    if missing:
        raise ValueError(f"the Roll back button's value lacks {', '.join(missing)}")
    registry = fields.get("registry") or "mlflow"
    if registry not in get_args(Registry):
        raise ValueError(f"the Roll back button names an unknown registry {registry!r}")
    return RollbackTarget(fields["model"], fields["version"], fields["endpoint"], registry)


def _detail_blocks(delivery: Delivery) -> list[dict]:
    note = delivery.note
    blocks: list[dict] = []
    if note.text:
        blocks.append({"type": "section", "text": _mrkdwn(_escape(note.text))})
    facts = [(k, v) for k, v in note.facts.items() if k not in HIDDEN_FACTS]
    if facts:
        blocks.append({"type": "section", "fields": [
            _mrkdwn(f"*{_escape(name)}*\n{_escape(value)}", 2000) for name, value in facts[:10]]})
    if delivery.links:
        line = " · ".join(f"<{url}|{_escape(label)}>" for label, url in delivery.links.items())
        blocks.append({"type": "section", "text": _mrkdwn(line)})
    context = (f"{SEVERITY_MARK[note.severity]} {note.severity} · {event_kind(note)} · "
               f"{note.facts.get('occurred', '')}")
    if delivery.repeat is not None:
        context += f" · seen {delivery.repeat.count} times within the dedup window"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return blocks


def root_blocks(delivery: Delivery) -> list[dict]:
    """The thread's first message: the latest state and the buttons."""
    blocks = [{"type": "header", "text": _plain(delivery.note.title, 150)},
              *_detail_blocks(delivery)]
    buttons = []
    if delivery.rollback is not None:
        target = delivery.rollback
        buttons.append({
            "type": "button", "action_id": ROLLBACK_ACTION_ID, "style": "danger",
            "text": _plain("Roll back", 75), "value": rollback_value(target),
            "confirm": {
                "title": _plain("Roll back?", 100),
                "text": _mrkdwn(_escape(f"Send all traffic on {target.endpoint} back to the "
                                        f"champion and retire {target.model_name} "
                                        f"v{target.version}?"), 300),
                "confirm": _plain("Roll back", 30), "deny": _plain("Cancel", 30),
                "style": "danger"}})
    if delivery.mlflow_url:
        buttons.append({"type": "button", "action_id": OPEN_MLFLOW_ACTION_ID,
                        "text": _plain("Open in MLflow", 75), "url": delivery.mlflow_url})
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


def reply_blocks(delivery: Delivery) -> list[dict]:
    note = delivery.note
    heading = f"{SEVERITY_MARK[note.severity]} *{_escape(note.title)}*"
    return [{"type": "section", "text": _mrkdwn(heading)}, *_detail_blocks(delivery)]


def fallback_text(delivery: Delivery) -> str:
    return _cut(f"{delivery.note.title}: {delivery.note.text}", 3000)


def message_metadata(delivery: Delivery) -> dict:
    return {"event_type": METADATA_EVENT, "event_payload": {"notification": delivery.event_id}}


def posted_for(messages: list[dict], event_id: str) -> dict | None:
    """The message (if any) whose metadata names the notification `event_id`."""
    for message in messages:
        metadata = message.get("metadata") or {}
        if metadata.get("event_type") == METADATA_EVENT and \
                (metadata.get("event_payload") or {}).get("notification") == event_id:
            return message
    return None


def looks_like_channel_id(channel: str) -> bool:
    return channel[:1] in ("C", "G") and channel.isalnum() and channel.isupper()


# ---- threads on the state table ----

@dataclass(frozen=True)
class Thread:
    key: str
    channel: str
    ts: str
    latest_event_id: str
    latest_occurred: str


def _occurred(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def thread_key(note: NotificationRequested) -> str:
    """Everything about one model version (its rollout included) shares a Slack thread; an alert
    about no particular version gets one per alert, so its resolution lands under it."""
    if note.model_name and note.version:
        return f"{note.model_name}/{note.version}"
    if note.facts.get("alert_fingerprint"):
        return f"alert/{note.facts['alert_fingerprint']}"
    return note.dedup_key


def _thread(key: str, properties: dict) -> Thread:
    return Thread(key, properties["channel"], properties["ts"],
                  properties.get("latest_event_id", ""), properties.get("latest_occurred", ""))


class SlackThreads:
    """Which Slack message heads each thread. A worker opening a thread holds a short lease, so
    two notifications about one version racing each other cannot open two threads."""

    PARTITION = "slack-thread"
    CLAIM_ATTEMPTS = 3
    ADVANCE_ATTEMPTS = 5

    def __init__(self, table: Table, lease_seconds: float = 60.0):
        self.table = table
        self.lease_seconds = lease_seconds

    def get(self, key: str) -> Thread | None:
        row = self.table.get(self.PARTITION, safe_row_key(key))
        if row is None or row.properties.get("state") != "open":
            return None
        return _thread(key, row.properties)

    def open_or_claim(self, key: str, now: float) -> Thread | str:
        """The open thread, or the ETag of a claim to open it (raises if another worker is)."""
        def claim(current: dict | None) -> dict | None:
            if current is not None and current.get("state") == "open":
                return None
            if current is not None and float(current.get("lease_expires_at", 0)) > now:
                raise ChannelError(f"another worker is opening the Slack thread for {key}",
                                   transient=True)
            return {"key": key, "state": "creating", "lease_expires_at": now + self.lease_seconds}

        try:
            row = self.table.modify(self.PARTITION, safe_row_key(key), claim,
                                    self.CLAIM_ATTEMPTS)
        except ConcurrencyConflict:
            raise ChannelError(f"the Slack thread for {key} kept changing",
                               transient=True) from None
        assert row is not None, "claim keeps the open row or saves a claim"
        if row.properties.get("state") == "open":
            return _thread(key, row.properties)
        return row.etag

    def opened(self, key: str, etag: str, channel: str, ts: str, event_id: str,
               occurred: str) -> None:
        self.table.replace(self.PARTITION, safe_row_key(key), {
            "key": key, "state": "open", "channel": channel, "ts": ts,
            "latest_event_id": event_id, "latest_occurred": occurred}, etag)

    def adopt(self, key: str, channel: str, ts: str, event_id: str, occurred: str) -> None:
        """A thread head found in the channel, posted by an attempt cut short before it recorded
        it: record it open, unless another thread for the key is open by now."""
        def head(current: dict | None) -> dict | None:
            if current is not None and current.get("state") == "open":
                return None
            return {"key": key, "state": "open", "channel": channel, "ts": ts,
                    "latest_event_id": event_id, "latest_occurred": occurred}

        self.table.modify(self.PARTITION, safe_row_key(key), head, self.ADVANCE_ATTEMPTS)

    def channel_id(self, configured: str) -> str | None:
        """The ID of the configured channel (a name cannot be read back), once a post told it."""
        if looks_like_channel_id(configured):
            return configured
        row = self.table.get(self.PARTITION, safe_row_key(f"channel/{configured}"))
        return row.properties.get("id") if row else None

    def learned_channel_id(self, configured: str, channel_id: str) -> None:
        if looks_like_channel_id(configured):
            return

        def learned(current: dict | None) -> dict | None:
            if current is not None and current.get("id") == channel_id:
                return None
            return {"name": configured, "id": channel_id}

        self.table.modify(self.PARTITION, safe_row_key(f"channel/{configured}"), learned,
                          self.ADVANCE_ATTEMPTS)

    def release(self, key: str, etag: str) -> None:
        try:
            self.table.delete(self.PARTITION, safe_row_key(key), etag)
        except ConcurrencyConflict:
            pass

    def advance(self, key: str, event_id: str, occurred: str) -> None:
        """Record that the head message now shows this notification (best effort: if the row
        keeps changing, a later notification records its own)."""
        def latest(current: dict | None) -> dict | None:
            if current is None:
                return None
            return {**current, "latest_event_id": event_id, "latest_occurred": occurred}

        try:
            self.table.modify(self.PARTITION, safe_row_key(key), latest, self.ADVANCE_ATTEMPTS)
        except ConcurrencyConflict:
            pass


def _is_newer(occurred: str, than: str) -> bool:
    mine, theirs = _occurred(occurred), _occurred(than)
    return mine is None or theirs is None or mine >= theirs


# ---- the channel ----

class SlackChannel:
    name = "slack"
    updates_in_place = True
    resends_safely = False  # a re-sent chat.postMessage is a second message

    def __init__(self, client, channel: str, threads: SlackThreads):
        self.client = client
        self.channel = channel
        self.threads = threads

    def deliver(self, delivery: Delivery) -> dict:
        if delivery.repeat is not None:
            return self._calling(self._update_repeat, delivery)
        return self._calling(self._post, delivery)

    def find_sent(self, delivery: Delivery, since: float) -> dict | None:
        """Where an earlier attempt posted this notification, or None if it did not. Raises a
        permanent ChannelError when it cannot look (no history scope, channel ID unknown)."""
        return self._calling(self._find_sent, delivery, since)

    @staticmethod
    def _calling(action, *args):
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            return action(*args)
        except SlackApiError as exc:
            response = exc.response
            error = response.get("error") if isinstance(response.data, dict) else None
            method = str(response.api_url).rstrip("/").rsplit("/", 1)[-1]
            if response.status_code >= 500:
                raise ChannelError(f"Slack {method} failed: HTTP {response.status_code}",
                                   True) from None
            transient = response.status_code == 429 or error in TRANSIENT_ERRORS
            raise ChannelError(f"Slack {method} failed: {_cut(str(error), 200)}",
                               transient) from None
        except (SlackClientError, OSError) as exc:
            raise ChannelError(f"Slack unreachable: {type(exc).__name__}", True) from None

    def _post(self, delivery: Delivery) -> dict:
        key = thread_key(delivery.note)
        occurred = delivery.note.facts.get("occurred", "")
        found = self.threads.open_or_claim(key, delivery.now or time.time())
        text = fallback_text(delivery)
        if isinstance(found, Thread):
            if _is_newer(occurred, found.latest_occurred):
                # Head first: updating it again on a retry is harmless, a second reply is not.
                self.client.chat_update(channel=found.channel, ts=found.ts, text=text,
                                        blocks=root_blocks(delivery))
            reply = self.client.chat_postMessage(channel=found.channel, thread_ts=found.ts,
                                                 text=text, blocks=reply_blocks(delivery),
                                                 metadata=message_metadata(delivery))
            if _is_newer(occurred, found.latest_occurred):
                self.threads.advance(key, delivery.event_id, occurred)
            return {"channel": found.channel, "ts": reply["ts"], "thread_ts": found.ts,
                    "root": False}
        try:
            posted = self.client.chat_postMessage(channel=self.channel, text=text,
                                                  blocks=root_blocks(delivery),
                                                  metadata=message_metadata(delivery))
        except BaseException:
            self.threads.release(key, found)
            raise
        self.threads.learned_channel_id(self.channel, posted["channel"])
        self.threads.opened(key, found, posted["channel"], posted["ts"], delivery.event_id,
                            occurred)
        return {"channel": posted["channel"], "ts": posted["ts"], "thread_ts": posted["ts"],
                "root": True}

    def _find_sent(self, delivery: Delivery, since: float) -> dict | None:
        key, event_id = thread_key(delivery.note), delivery.event_id
        oldest = f"{max(since - LOOKUP_MARGIN_SECONDS, 0):.6f}"
        thread = self.threads.get(key)
        if thread is not None:
            replies = self.client.conversations_replies(
                channel=thread.channel, ts=thread.ts, oldest=oldest, limit=LOOKUP_LIMIT,
                include_all_metadata=True)
            reply = posted_for(replies.get("messages") or [], event_id)
            if reply is not None:
                return {"channel": thread.channel, "ts": reply["ts"], "thread_ts": thread.ts,
                        "root": reply["ts"] == thread.ts, "found": True}
        channel = thread.channel if thread is not None else self.threads.channel_id(self.channel)
        if channel is None:
            raise ChannelError(f"cannot look for an earlier post: the ID of {self.channel} is "
                               f"not known yet (configure SLACK_CHANNEL as an ID)", False)
        history = self.client.conversations_history(channel=channel, oldest=oldest,
                                                    limit=LOOKUP_LIMIT, include_all_metadata=True)
        root = posted_for(history.get("messages") or [], event_id)
        if root is None:
            return None
        self.threads.adopt(key, channel, root["ts"], event_id,
                           delivery.note.facts.get("occurred", ""))
        return {"channel": channel, "ts": root["ts"], "thread_ts": root["ts"], "root": True,
                "found": True}

    def _update_repeat(self, delivery: Delivery) -> dict:
        repeat = delivery.repeat
        assert repeat is not None
        ref = repeat.refs.get(self.name)
        if not ref:
            return {"collapsed_into": repeat.original_event_id}
        if ref.get("root"):
            thread = self.threads.get(thread_key(delivery.note))
            if thread is None or thread.latest_event_id != repeat.original_event_id:
                return {"collapsed_into": repeat.original_event_id}  # the head moved on
            blocks = root_blocks(delivery)
        else:
            blocks = reply_blocks(delivery)
        self.client.chat_update(channel=ref["channel"], ts=ref["ts"],
                                text=fallback_text(delivery), blocks=blocks)
        return {"collapsed_into": repeat.original_event_id, "updated": ref["ts"],
                "channel": ref["channel"]}


# ---- signed interaction requests (button clicks) ----

class SlackRequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def verify_request(headers: Mapping[str, str], body: bytes, signing_secret: str | None,
                   now: float | None = None) -> None:
    """Check Slack's request signature with slack-sdk's SignatureVerifier; on failure raise a
    401 that says why."""
    from slack_sdk.signature import Clock, SignatureVerifier

    at = time.time() if now is None else now
    if not signing_secret:
        raise SlackRequestError(401, "Slack request signing is not configured "
                                     "(SLACK_SIGNING_SECRET); refusing unverified actions")
    lowered = {name.lower(): value for name, value in headers.items()}
    signature = lowered.get("x-slack-signature")
    timestamp = lowered.get("x-slack-request-timestamp")
    if not signature:
        raise SlackRequestError(401, "missing header X-Slack-Signature")
    if not timestamp:
        raise SlackRequestError(401, "missing header X-Slack-Request-Timestamp")
    try:
        stamp = int(timestamp)
    except ValueError:
        raise SlackRequestError(401, "X-Slack-Request-Timestamp is not a Unix time") from None
    if abs(at - stamp) > SIGNATURE_TOLERANCE_SECONDS:
        raise SlackRequestError(401, f"stale request: X-Slack-Request-Timestamp is "
                                     f"{abs(int(at) - stamp)} s from now (tolerance "
                                     f"{SIGNATURE_TOLERANCE_SECONDS} s)")

    class _Now(Clock):
        def now(self) -> float:
            return at

    if not SignatureVerifier(signing_secret, clock=_Now()).is_valid(body, timestamp, signature):
        raise SlackRequestError(401, "X-Slack-Signature does not match the request")


def interaction_payload(body: bytes, content_type: str | None) -> dict:
    """The JSON `payload` field of Slack's form-encoded interaction request."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type and media_type != "application/x-www-form-urlencoded":
        raise SlackRequestError(415, f"Content-Type {media_type!r} is not supported; Slack "
                                     f"sends application/x-www-form-urlencoded")
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise SlackRequestError(400, "the body is not UTF-8 form data") from None
    values = form.get("payload")
    if not values or not values[0]:
        raise SlackRequestError(400, "the form has no payload field")
    try:
        payload = json.loads(values[0])
    except ValueError:
        raise SlackRequestError(400, "the payload field is not JSON") from None
    if not isinstance(payload, dict):
        raise SlackRequestError(400, "the payload is not a JSON object")
    if payload.get("type") != "block_actions":
        raise SlackRequestError(400, f"interaction type {payload.get('type')!r} is not "
                                     f"handled; only block_actions (button clicks) are")
    if not isinstance(payload.get("actions"), list) or not payload["actions"]:
        raise SlackRequestError(400, "the payload has no actions")
    user = payload.get("user")
    if not isinstance(user, dict) or not user.get("id"):
        raise SlackRequestError(400, "the payload has no user.id")
    return payload


@dataclass(frozen=True)
class RollbackClick:
    target: RollbackTarget
    user_id: str
    user_name: str | None
    action_ts: str
    channel_id: str | None
    message_ts: str | None

    @property
    def actor(self) -> str:
        name = f"/{self.user_name}" if self.user_name else ""
        return f"slack:{self.user_id}{name}"


def rollback_click(payload: dict) -> RollbackClick | None:
    """The Roll back click in a verified payload; None for other buttons (Open in MLflow)."""
    action = next((a for a in payload["actions"]
                   if isinstance(a, dict) and a.get("action_id") == ROLLBACK_ACTION_ID), None)
    if action is None:
        return None
    value = action.get("value")
    try:  # a missing or non-text value is "not JSON", as "" is
        target = parse_rollback_value(value if isinstance(value, str) else "")
    except ValueError as exc:
        raise SlackRequestError(400, str(exc)) from None
    user = payload["user"]
    given_container, given_channel = payload.get("container"), payload.get("channel")
    container: dict = given_container if isinstance(given_container, dict) else {}
    channel: dict = given_channel if isinstance(given_channel, dict) else {}
    return RollbackClick(target=target, user_id=str(user["id"]),
                         user_name=user.get("username") or user.get("name"),
                         action_ts=str(action.get("action_ts") or ""),
                         channel_id=channel.get("id") or container.get("channel_id"),
                         message_ts=container.get("message_ts"))


def rollback_request(click: RollbackClick):
    """The RollbackRequested a click asks for; the same click delivered twice has one id."""
    from shared.events import Decision, Envelope, RollbackRequested

    where = f" (channel {click.channel_id}, message {click.message_ts})" if click.channel_id else ""
    target = click.target
    data = RollbackRequested(
        model_name=target.model_name, registry=target.registry, version=target.version,
        endpoint=target.endpoint,
        decision=Decision(actor=click.actor,
                          reason=f"Roll back clicked in Slack by "
                                 f"{click.user_name or click.user_id}{where}"))
    return Envelope.wrap(data, source=ACTIONS_SOURCE, dedupe_key=(
        f"{click.user_id}|{click.action_ts}|{target.model_name}|{target.version}|"
        f"{target.endpoint}"))
