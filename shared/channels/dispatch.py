"""Which channels hear about a notification, and delivering it to each of them once.

The decisions are pure (route_channels, judge_repeat, rollback_target, mlflow_links). The
Dispatcher is the shell around them: it is handed its channels (shared/channels/factory.py builds
them), records on the state table which channel got which notification (so a redelivered message
never re-posts), collapses repeats within the policy's window, and keeps going when one channel
fails: the failure is recorded with the notification, and a transient one makes the message come
back later for that channel only.

Each (notification, channel) is delivered once across retries and crashes. A crash between a
send and the record of it is the one place a redo could send twice, so:
- channels whose target drops a repeat (`resends_safely`: PagerDuty by dedup_key, the outbox by
  event id) are simply sent again: at least once at the wire, once at the target;
- the others (Slack, Teams) record their intent (`sending`) before the send. A redo that finds
  an intent with no outcome asks the channel where the earlier attempt posted (`find_sent`,
  Slack: by the message metadata naming the notification): found, it is recorded delivered;
  not found, it is sent now. Exactly once, where the channel can be read back.
- where it cannot (Teams' incoming webhooks; Slack without the history scope), the redo does not
  send again: the message may well have gone, and a second copy in a chat channel is the worse
  failure. That is at most once: a host killed after the intent and before the send loses that
  channel's copy, a window of one network call, against a double post on every crash after a
  send.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from urllib.parse import quote

from shared.channels.base import (
    Channel,
    ChannelError,
    Delivery,
    Repeat,
    RollbackTarget,
    event_kind,
    page_intent,
)
from shared.channels.policy import NotificationPolicy
from shared.events import Envelope, NotificationRequested
from shared.foundation.failpoints import failpoint
from shared.foundation.state import ConcurrencyConflict, StateTable, Table, safe_row_key

log = logging.getLogger("gatehouse.notify")

STATE_TABLE = "gatehousenotifications"
RELIABILITY_DIAGRAM_ARTIFACT = "reliability.png"  # what the gate report logs
# Notifications about a version that (still or again) serves traffic carry a Roll back action.
ROLLBACKABLE_KINDS = frozenset({"rollout.canary_started", "rollout.traffic_ramped",
                                "rollout.promoted", "rollout.rollback_requested",
                                "rollout.stalled",
                                "monitoring.alert"})
MAX_REMEMBERED_REPEATS = 20
STATE_ATTEMPTS = 8
SENDING, DELIVERED, FAILED = "sending", "delivered", "failed"

# Just after a channel's send, before it is recorded: one literal point per channel, so the crash
# suite finds each name in the source.
AFTER_SEND: dict[str, Callable[[], None]] = {
    "outbox": lambda: failpoint("notify.sent_outbox"),
    "slack": lambda: failpoint("notify.sent_slack"),
    "teams": lambda: failpoint("notify.sent_teams"),
    "pagerduty": lambda: failpoint("notify.sent_pagerduty"),
}


# ---- pure decisions ----

def route_channels(note: NotificationRequested, policy: NotificationPolicy,
                   configured: Collection[str]) -> list[str]:
    """The configured channels the policy sends this note to; the outbox when there are none."""
    chosen = [name for name in policy.channels_for(event_kind(note), note.model_name,
                                                   note.severity) if name in configured]
    if "pagerduty" in chosen and page_intent(note, policy) is None:
        chosen.remove("pagerduty")
    return chosen or ["outbox"]


class RepeatVerdict(str, Enum):
    ORIGINAL = "original"              # first of its kind in the window: deliver everywhere
    ORIGINAL_AGAIN = "original-again"  # the same event redelivered
    REPEAT = "repeat"                  # an identical notification within the window: collapse
    REPEAT_AGAIN = "repeat-again"      # a collapsed repeat redelivered


def judge_repeat(record: Mapping | None, event_id: str, now: float,
                 window_seconds: float) -> RepeatVerdict:
    if record is None:
        return RepeatVerdict.ORIGINAL
    if record.get("event_id") == event_id:
        return RepeatVerdict.ORIGINAL_AGAIN
    if event_id in json.loads(record.get("repeat_ids") or "[]"):
        return RepeatVerdict.REPEAT_AGAIN
    if now - float(record.get("first_seen", 0)) < window_seconds:
        return RepeatVerdict.REPEAT
    return RepeatVerdict.ORIGINAL


def rollback_target(note: NotificationRequested) -> RollbackTarget | None:
    endpoint = note.facts.get("endpoint")
    if not (note.model_name and note.version and endpoint):
        return None
    if event_kind(note) not in ROLLBACKABLE_KINDS or note.facts.get("alert_status") == "resolved":
        return None
    return RollbackTarget(note.model_name, note.version, endpoint,
                          note.facts.get("registry", "mlflow"))


def mlflow_links(note: NotificationRequested, ui_url: str | None) -> dict[str, str]:
    """Links into the MLflow UI (model version, report run, reliability diagram), then the
    note's own links."""
    links: dict[str, str] = {}
    if ui_url and note.model_name:
        base = ui_url.rstrip("/")
        model = quote(note.model_name, safe="")
        links["model"] = (f"{base}/#/models/{model}/versions/{quote(note.version, safe='')}"
                          if note.version else f"{base}/#/models/{model}")
        run_id = note.facts.get("report_run_id")
        if run_id:
            links["report"] = f"{base}/#/runs/{quote(run_id, safe='')}"
            links["reliability diagram"] = (f"{base}/get-artifact?path="
                                            f"{RELIABILITY_DIAGRAM_ARTIFACT}"
                                            f"&run_uuid={quote(run_id)}")
    return {**links, **note.links}


class DeliveryIncomplete(Exception):
    """Some channel failed transiently; the queue redelivers and only that channel is retried."""


# ---- state: what went where ----

class NotificationState:
    """Delivery records and dedup records on the state table (Azure Tables)."""

    DELIVERIES = "delivery"
    DEDUP = "dedup"

    def __init__(self, table: Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> NotificationState:
        return cls(StateTable(connection_string, STATE_TABLE))

    def _put(self, partition: str, key: str, update: Callable[[dict | None], dict]) -> dict:
        """Read-modify-write one row; a row that keeps changing is a transient channel error."""
        try:
            saved = self.table.modify(partition, safe_row_key(key), update, STATE_ATTEMPTS)
        except ConcurrencyConflict:
            raise ChannelError(f"state row {partition}/{key} kept changing under us",
                               transient=True) from None
        assert saved is not None, "`update` always returns a row to save"
        return saved.properties

    # dedup

    def register(self, dedup_key: str, event_id: str, now: float,
                 window_seconds: float) -> Repeat | None:
        """Note that this notification was seen; a Repeat when it collapses into an earlier one."""
        outcome: list[Repeat | None] = [None]

        def update(record: dict | None) -> dict:
            verdict = judge_repeat(record, event_id, now, window_seconds)
            outcome[0] = None
            if verdict is RepeatVerdict.ORIGINAL:
                return {"dedup_key": dedup_key, "event_id": event_id, "first_seen": now,
                        "count": 1, "refs": "{}", "repeat_ids": "[]"}
            assert record is not None
            if verdict is RepeatVerdict.ORIGINAL_AGAIN:
                return record
            repeat_ids = json.loads(record.get("repeat_ids") or "[]")
            count = int(record.get("count", 1))
            if verdict is RepeatVerdict.REPEAT:
                count += 1
                repeat_ids = (repeat_ids + [event_id])[-MAX_REMEMBERED_REPEATS:]
            outcome[0] = Repeat(record["event_id"], count, json.loads(record.get("refs") or "{}"))
            return {**record, "count": count, "last_seen": now,
                    "repeat_ids": json.dumps(repeat_ids)}

        self._put(self.DEDUP, dedup_key, update)
        return outcome[0]

    def remember_ref(self, dedup_key: str, event_id: str, channel: str, ref: dict) -> None:
        """Where a channel put the original, so repeats can update it in place."""
        def update(record: dict | None) -> dict:
            if record is None or record.get("event_id") != event_id:
                return record or {"dedup_key": dedup_key, "event_id": event_id,
                                  "first_seen": time.time(), "count": 1, "refs": "{}",
                                  "repeat_ids": "[]"}
            refs = json.loads(record.get("refs") or "{}")
            refs[channel] = ref
            return {**record, "refs": json.dumps(refs)}

        self._put(self.DEDUP, dedup_key, update)

    # deliveries

    def delivery(self, event_id: str, channel: str) -> dict | None:
        row = self.table.get(self.DELIVERIES, safe_row_key(f"{event_id}|{channel}"))
        return row.properties if row else None

    def record_sending(self, event_id: str, channel: str) -> None:
        """The intent to send, before the send (see the module docstring)."""
        def update(record: dict | None) -> dict:
            attempts = int((record or {}).get("attempts", 0))
            return {"event_id": event_id, "channel": channel, "status": SENDING,
                    "attempts": attempts, "updated_at": time.time()}

        self._put(self.DELIVERIES, f"{event_id}|{channel}", update)

    def record_delivered(self, event_id: str, channel: str, ref: dict) -> None:
        self._put(self.DELIVERIES, f"{event_id}|{channel}", lambda _: {
            "event_id": event_id, "channel": channel, "status": DELIVERED,
            "ref": json.dumps(ref), "updated_at": time.time()})

    def record_failure(self, envelope: Envelope, channel: str, error: str,
                       transient: bool) -> dict:
        def update(record: dict | None) -> dict:
            attempts = int((record or {}).get("attempts", 0)) + 1
            return {"event_id": envelope.id, "channel": channel, "status": FAILED,
                    "error": error, "transient": transient, "attempts": attempts,
                    "updated_at": time.time(), "envelope": envelope.to_json()}

        return self._put(self.DELIVERIES, f"{envelope.id}|{channel}", update)

    def failures(self) -> list[dict]:
        """Notifications some channel did not get: the envelope is kept for a replay."""
        rows = [row.properties for row in self.table.rows(self.DELIVERIES)]
        return [row for row in rows if row.get("status") == FAILED]


# ---- the shell ----

PolicyLookup = Callable[[str | None], NotificationPolicy]
RollbackLink = Callable[[RollbackTarget], str | None]


class Dispatcher:
    def __init__(self, channels: Mapping[str, Channel], state: NotificationState,
                 policy_for: PolicyLookup, *, mlflow_ui_url: str | None = None,
                 rollback_link: RollbackLink | None = None,
                 redact: Callable[[str], str] = lambda text: text,
                 clock: Callable[[], float] = time.time):
        self.channels = dict(channels)
        self.state = state
        self.policy_for = policy_for
        self.mlflow_ui_url = mlflow_ui_url
        self.rollback_link = rollback_link
        self.redact = redact
        self.clock = clock

    def plan(self, note: NotificationRequested) -> list[str]:
        return route_channels(note, self.policy_for(note.model_name), self.channels)

    def _delivery(self, envelope: Envelope, policy: NotificationPolicy, now: float,
                  repeat: Repeat | None) -> Delivery:
        note: NotificationRequested = envelope.data  # type: ignore[assignment]
        target = rollback_target(note)
        link = note.links.get("rollback")
        if link is None and target is not None and self.rollback_link is not None:
            try:
                link = self.rollback_link(target)
            except Exception as exc:  # a missing link must not hold the notification back
                log.warning("no rollback link for %s v%s on %s: %s", target.model_name,
                            target.version, target.endpoint, self.redact(str(exc)))
        return Delivery(event_id=envelope.id, note=note, policy=policy,
                        links=mlflow_links(note, self.mlflow_ui_url), rollback=target,
                        rollback_url=link, repeat=repeat, now=now)

    def deliver(self, envelope: Envelope) -> dict:
        """Deliver to every routed channel that has not had it; raise DeliveryIncomplete when a
        channel failed transiently (after the others were served and the failure recorded)."""
        note = envelope.data
        if not isinstance(note, NotificationRequested):
            raise ValueError(f"{envelope.id} is a {envelope.type}, not a notification request")
        now = self.clock()
        policy = self.policy_for(note.model_name)
        repeat = self.state.register(note.dedup_key, envelope.id, now,
                                     policy.dedup_window_seconds)
        delivery = self._delivery(envelope, policy, now, repeat)
        results: dict[str, dict] = {}
        retry: list[str] = []
        for name in route_channels(note, policy, self.channels):
            outcome = self._deliver_to(name, envelope, delivery)
            results[name] = outcome
            if outcome.get("failed") and outcome.get("transient"):
                retry.append(name)
        summary: dict[str, object] = {"channels": results}
        if repeat is not None:
            summary["repeat_of"] = repeat.original_event_id
            summary["seen"] = repeat.count
        if retry:
            raise DeliveryIncomplete(f"notification {envelope.id}: {', '.join(retry)} failed; "
                                     f"it will be retried for those channels only")
        failpoint("notify.delivered")
        return summary

    def _deliver_to(self, name: str, envelope: Envelope, delivery: Delivery) -> dict:
        done = self.state.delivery(envelope.id, name)
        status = done.get("status") if done else None
        if done and status == DELIVERED:
            return {"already": True, **json.loads(done.get("ref") or "{}")}
        if done and status == FAILED and not done.get("transient"):
            return {"failed": done.get("error"), "transient": False}
        channel = self.channels[name]
        collapsed = delivery.repeat is not None and not channel.updates_in_place
        try:
            if collapsed:
                assert delivery.repeat is not None
                ref = {"collapsed_into": delivery.repeat.original_event_id}
            else:
                if status == SENDING and not channel.resends_safely:
                    earlier = self._look_for_earlier_send(
                        name, envelope, delivery, float((done or {}).get("updated_at") or 0))
                    if earlier is not None:
                        return earlier
                if not channel.resends_safely:
                    self.state.record_sending(envelope.id, name)
                ref = channel.deliver(delivery)
        except Exception as exc:  # one channel's failure, whatever it is, must not stop the rest
            transient = exc.transient if isinstance(exc, ChannelError) else True
            message = self.redact(str(exc) if isinstance(exc, ChannelError)
                                  else f"{type(exc).__name__}: {exc}")
            self.state.record_failure(envelope, name, message, transient)
            log.warning("notification %s to %s failed (%s): %s", envelope.id, name,
                        "will retry" if transient else "permanent", message)
            return {"failed": message, "transient": transient}
        if not collapsed:
            AFTER_SEND.get(name, lambda: None)()  # sent, not yet recorded: a crash lands here
        self.state.record_delivered(envelope.id, name, ref)
        if delivery.repeat is None:
            self.state.remember_ref(delivery.note.dedup_key, envelope.id, name, ref)
        return ref

    def _look_for_earlier_send(self, name: str, envelope: Envelope, delivery: Delivery,
                               since: float) -> dict | None:
        """The outcome of an attempt cut short after its intent: what it posted (recorded now),
        or, when the channel cannot tell, unconfirmed; None when it did not post."""
        find_sent = getattr(self.channels[name], "find_sent", None)
        if find_sent is None:
            return self._unconfirmed(name, envelope)
        try:
            ref: dict | None = find_sent(delivery, since)
        except ChannelError as exc:
            if exc.transient:
                raise
            log.warning("notification %s to %s: cannot look for an earlier post: %s",
                        envelope.id, name, self.redact(str(exc)))
            return self._unconfirmed(name, envelope)
        if ref is None:
            return None
        self.state.record_delivered(envelope.id, name, ref)
        if delivery.repeat is None:
            self.state.remember_ref(delivery.note.dedup_key, envelope.id, name, ref)
        return ref

    def _unconfirmed(self, name: str, envelope: Envelope) -> dict:
        """An earlier attempt was cut short between its intent and its outcome: it may have
        sent, so this one does not (at most once), and says so."""
        ref = {"unconfirmed": True, "detail": "an earlier attempt stopped after its intent to "
                                              "send; not sent again"}
        log.warning("notification %s to %s: %s", envelope.id, name, ref["detail"])
        self.state.record_delivered(envelope.id, name, ref)
        return ref
