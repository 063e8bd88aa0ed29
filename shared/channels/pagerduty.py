"""PagerDuty through the `pagerduty` package's Events API v2 client.

Incidents are keyed by (model, endpoint, alert kind): a trigger with the same key joins the open
incident in PagerDuty. A rollback that completes resolves every open incident of that model on
that endpoint; a resolved alert resolves its own. Storm control: while one incident for a model is
open and younger than the policy's storm window, further alerts for that model do not page again
(they still reach Slack and Teams). They are held, not forgotten: when the storm's incidents are
resolved, the held alerts that are still firing get one page, "still firing after an alert storm".
A held alert that resolves meanwhile, or is about the version a completed rollback removed, is
dropped.

Per-incident ordering. Retries can reorder a trigger and its resolve; PagerDuty drops a resolve
for an incident it does not have, so a resolve that overtook its trigger would leave the incident
open for good. So:
- an incident is recorded open only once PagerDuty accepted its trigger (2xx; the client raises
  otherwise), and storms are judged only on incidents recorded that way;
- a resolve for a key that is neither open nor held waits (`pending`), and is sent right after
  its trigger is accepted; a trigger that happened after the waiting resolve (its `occurred`
  time is later) is a new firing and drops it;
- resolves applied are remembered (`resolved`), so a trigger older than the last resolve of its
  key (a late redelivery) pages nobody;
- a trigger is recorded as intended (`triggering`) before it is sent: a host killed after
  PagerDuty accepted it, before it was recorded open, leaves the intent, so the retry sends it
  again even inside a storm (where a new alert would be held), and a resolve meanwhile treats the
  key as open (resolving an incident PagerDuty never opened is a no-op there).
Waiting and applied resolves are kept for a day. Every step is safe to redo: PagerDuty folds a
repeated trigger into the incident its dedup_key opened and ignores a repeated resolve, and the
record shows which steps landed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared.channels.base import ChannelError, Delivery, event_kind, page_intent, rollback_paged
from shared.foundation.failpoints import failpoint
from shared.foundation.state import ConcurrencyConflict, Row, Table, safe_row_key

# PagerDuty's severities have the same names as Gatehouse's; the map makes the contract explicit.
PAGERDUTY_SEVERITY = {"info": "info", "warning": "warning", "error": "error",
                      "critical": "critical"}
ROLLBACK_KINDS = ("rollout.rollback_requested", "rollout.rollback_completed")
MAX_DEDUP_KEY = 255
MAX_HELD = 20  # per storm scope; beyond that an alert only reaches the chat channels
STATE_ATTEMPTS = 8
REMEMBER_SECONDS = 24 * 3600  # resolves waiting for their trigger, and resolves applied


def events_client(routing_key: str, events_url: str | None = None, ca_bundle: str | None = None,
                  *, sleep_timer: float = 1.5):
    """An EventsApiV2Client with bounded retries (the library retries 429 forever otherwise).

    `events_url` may be the base URL or the full enqueue URL; `ca_bundle` names extra CAs to
    trust (a TLS-inspecting proxy, or a test peer's self-signed certificate).
    """
    import ssl

    import pagerduty

    base = None
    if events_url:
        base = events_url.rstrip("/")
        if base.endswith("/v2/enqueue"):
            base = base[:-len("/v2/enqueue")]
    if ca_bundle:
        client = pagerduty.EventsApiV2Client(
            routing_key, base_url=base, verify=ssl.create_default_context(cafile=ca_bundle))
    else:
        client = pagerduty.EventsApiV2Client(routing_key, base_url=base)
    client.retry[429] = 3
    client.max_network_attempts = 2
    client.sleep_timer = sleep_timer
    client.timeout = 10  # seconds (the library declares it an int)
    return client


# ---- pure decisions ----

def alert_kind(note) -> str:
    if event_kind(note) in ROLLBACK_KINDS:
        return "rollback"
    return note.facts.get("alert_kind", "other")


def incident_key(note) -> str:
    key = "/".join(("gatehouse", note.model_name or "-", note.facts.get("endpoint") or "-",
                    alert_kind(note)))
    if len(key) <= MAX_DEDUP_KEY:
        return key
    return "gatehouse/" + hashlib.sha256(key.encode()).hexdigest()


def storm_scope(note) -> str:
    """What one page covers: the model; failing that the endpoint; failing that all of Gatehouse."""
    if note.model_name:
        return f"model:{note.model_name}"
    if note.facts.get("endpoint"):
        return f"endpoint:{note.facts['endpoint']}"
    return "gatehouse"


@dataclass(frozen=True)
class OpenIncident:
    key: str
    opened_at: float
    endpoint: str | None = None
    occurred: str = ""  # when the alert that opened it fired


@dataclass(frozen=True)
class Mark:
    """A resolve remembered for a key: when it was recorded, and when its alert resolved."""

    at: float
    occurred: str = ""


@dataclass(frozen=True)
class PagePlan:
    action: Literal["trigger", "resolve", "suppress", "nothing"]
    key: str
    resolve_keys: tuple[str, ...] = ()  # for a trigger: its waiting resolve, sent right after
    reason: str = ""
    hold: bool = False  # suppressed by a storm: page it if it still fires when the storm ends
    settles: Mark | None = None  # the waiting resolve of `key` this plan consumes


def occurred_of(note) -> str:
    return str(note.facts.get("occurred") or "")


def not_after(first: str, second: str) -> bool | None:
    """Whether time `first` is at or before `second` (ISO 8601); None when either is unknown."""
    try:
        return datetime.fromisoformat(first) <= datetime.fromisoformat(second)
    except (TypeError, ValueError):  # unparseable, or one has a zone and the other none
        return None


def _recent(open_incidents: dict[str, OpenIncident], now: float,
            storm_window_seconds: float) -> list[OpenIncident]:
    return sorted((i for i in open_incidents.values() if now - i.opened_at < storm_window_seconds),
                  key=lambda i: i.opened_at)


def plan_page(note, intent: str | None, open_incidents: dict[str, OpenIncident], now: float,
              storm_window_seconds: float, *, resolved: dict[str, Mark] | None = None,
              pending: dict[str, Mark] | None = None,
              triggering: dict[str, OpenIncident] | None = None,
              rollback_paged: bool = True) -> PagePlan:
    """What to do at PagerDuty for one note, given the scope's open incidents, the resolves
    applied (`resolved`), those waiting for their trigger (`pending`) and the triggers sent but
    not yet recorded open (`triggering`: a resolve treats them as open). A completed rollback
    whose request paged nobody (`rollback_paged` False: a person's, below page_min_severity)
    resolves only the open incidents it settles, never its own, which was never triggered."""
    key = incident_key(note)
    triggering = triggering or {}
    if intent is None:
        return PagePlan("nothing", key, reason="not a paging event")
    if intent == "resolve":
        keys = [key] if rollback_paged else []
        if event_kind(note) == "rollout.rollback_completed":
            endpoint = note.facts.get("endpoint")
            keys += sorted(k for k, incident in {**triggering, **open_incidents}.items()
                           if k != key and (incident.endpoint in (None, endpoint)))
        if not keys:
            return PagePlan("nothing", key, reason="the rollback paged nobody and no incident "
                                                   "it settles is open")
        return PagePlan("resolve", key, tuple(keys), "resolved")
    applied = (resolved or {}).get(key)
    if applied is not None and not_after(occurred_of(note), applied.occurred):
        return PagePlan("nothing", key, reason=f"resolved already (a resolve of "
                                               f"{applied.occurred or 'unknown time'} applied)")
    waiting = (pending or {}).get(key)
    if waiting is not None and not_after(occurred_of(note), waiting.occurred) is not False:
        return _settle_waiting(key, waiting, open_incidents, now, storm_window_seconds)
    if key in triggering and key not in open_incidents:
        return PagePlan("trigger", key, reason="a trigger of this incident was sent and not "
                                               "recorded: sent again")
    recent = _recent(open_incidents, now, storm_window_seconds)
    if any(i.key == key for i in recent):
        return PagePlan("suppress", key, reason=f"incident {key} is open already")
    if recent:
        return PagePlan("suppress", key, reason=f"storm: {recent[0].key} already paged for "
                                                f"{storm_scope(note)} and is still open",
                        hold=True)
    # Past the window a still-open key is triggered again: PagerDuty adds it to the open alert,
    # or opens a new one if someone resolved it there.
    return PagePlan("trigger", key, reason="new incident")


def _settle_waiting(key: str, waiting: Mark, open_incidents: dict[str, OpenIncident],
                    now: float, storm_window_seconds: float) -> PagePlan:
    """A trigger whose resolve came first: page and resolve at once (PagerDuty must see both,
    in that order), or, when a storm would have held it, page nobody."""
    if key in open_incidents:
        return PagePlan("resolve", key, (key,), "its resolve was waiting for the trigger",
                        settles=waiting)
    if _recent(open_incidents, now, storm_window_seconds):
        return PagePlan("nothing", key, reason="resolved before a storm let it page",
                        settles=waiting)
    return PagePlan("trigger", key, (key,), "its resolve arrived first: triggered, then resolved",
                    settles=waiting)


def held_after_resolve(held: dict[str, dict], note, resolved_keys: tuple[str, ...]
                       ) -> dict[str, dict]:
    """The held alerts still worth a page once `note` resolved `resolved_keys`: not the ones it
    resolved, nor, after a completed rollback, those about the version it removed."""
    rolled_back = (note.version, note.facts.get("endpoint")) \
        if event_kind(note) == "rollout.rollback_completed" else None
    return {key: entry for key, entry in held.items()
            if key not in resolved_keys
            and not (rolled_back and entry.get("version") == rolled_back[0]
                     and entry.get("endpoint") == rolled_back[1])}


def page_after_storm(held: dict[str, dict], open_incidents: dict[str, OpenIncident], now: float,
                     storm_window_seconds: float) -> tuple[str, dict] | None:
    """(incident key, trigger request) for the alerts a storm held back, once nothing recent is
    open: one page, the oldest alert's, naming the others. None while the storm lasts."""
    if not held or _recent(open_incidents, now, storm_window_seconds):
        return None
    first, *others = sorted(held.items(), key=lambda item: item[1]["held_at"])
    key, trigger = first[0], dict(first[1]["trigger"])
    trigger["summary"] = f"Still firing after an alert storm: {trigger['summary']}"[:1024]
    if others:
        trigger["custom_details"] = {**trigger["custom_details"], "also_still_firing": [
            entry["trigger"]["summary"] for _, entry in others]}
    return key, trigger


def trigger_request(note, delivery: Delivery, key: str) -> dict:
    """The Events API v2 trigger for `note`, as keyword arguments of the client's trigger()."""
    endpoint = note.facts.get("endpoint")
    payload = {"timestamp": note.facts.get("occurred"), "class": alert_kind(note),
               "component": endpoint, "group": note.model_name}
    return {"summary": note.title[:1024], "source": endpoint or note.model_name or "gatehouse",
            "dedup_key": key, "severity": PAGERDUTY_SEVERITY[note.severity],
            "payload": {k: v for k, v in payload.items() if v},
            "custom_details": {"text": note.text, **note.facts, "event_id": note.about_event_id},
            "links": [{"href": url, "text": label} for label, url in delivery.links.items()]}


# ---- open incidents (and held alerts, and resolves) on the state table ----

class IncidentsChanged(ChannelError):
    """Another worker changed an incident this delivery acted on; retried (transient)."""

    def __init__(self, message: str):
        super().__init__(message, transient=True)


@dataclass
class PageState:
    """One storm scope's row: incidents PagerDuty accepted and not yet resolved, alerts a storm
    held, resolves applied, resolves waiting for their trigger, and triggers about to be sent."""

    incidents: dict[str, OpenIncident] = field(default_factory=dict)
    held: dict[str, dict] = field(default_factory=dict)
    resolved: dict[str, Mark] = field(default_factory=dict)
    pending: dict[str, Mark] = field(default_factory=dict)
    triggering: dict[str, OpenIncident] = field(default_factory=dict)

    @property
    def open_or_triggering(self) -> dict[str, OpenIncident]:
        return {**self.triggering, **self.incidents}

    @classmethod
    def parse(cls, properties: dict | None) -> PageState:
        properties = properties or {}

        def loaded(name: str) -> dict[str, Any]:
            found: dict[str, Any] = json.loads(properties.get(name) or "{}")
            return found

        def incidents(name: str) -> dict[str, OpenIncident]:
            return {key: OpenIncident(key, value["opened_at"], value.get("endpoint"),
                                      value.get("occurred", ""))
                    for key, value in loaded(name).items()}

        return cls(incidents("incidents"), loaded("held"),
                   {key: Mark(**value) for key, value in loaded("resolved").items()},
                   {key: Mark(**value) for key, value in loaded("pending").items()},
                   incidents("triggering"))

    def properties(self, scope: str) -> dict[str, str]:
        def incidents(found: dict[str, OpenIncident]) -> str:
            return json.dumps({k: {"opened_at": i.opened_at, "endpoint": i.endpoint,
                                   "occurred": i.occurred} for k, i in found.items()})

        return {"scope": scope, "incidents": incidents(self.incidents),
                "held": json.dumps(self.held),
                "resolved": json.dumps({k: vars(m) for k, m in self.resolved.items()}),
                "pending": json.dumps({k: vars(m) for k, m in self.pending.items()}),
                "triggering": incidents(self.triggering)}

    def forget_before(self, cutoff: float) -> None:
        for marks in (self.resolved, self.pending):
            for key in [k for k, mark in marks.items() if mark.at < cutoff]:
                del marks[key]
        for key in [k for k, intent in self.triggering.items() if intent.opened_at < cutoff]:
            del self.triggering[key]


class OpenIncidents:
    PARTITION = "pagerduty"

    def __init__(self, table: Table):
        self.table = table

    def state(self, scope: str) -> PageState:
        row: Row | None = self.table.get(self.PARTITION, safe_row_key(scope))
        return PageState.parse(row.properties if row else None)

    def read(self, scope: str) -> tuple[dict[str, OpenIncident], dict[str, dict]]:
        """(open incidents, held alerts) of a storm scope."""
        state = self.state(scope)
        return state.incidents, state.held

    def _change(self, scope: str, change, now: float | None = None) -> PageState:
        """Apply `change(state)` to the scope's row with its ETag; the state saved. Marks older
        than REMEMBER_SECONDS (before `now`) are forgotten on the way."""
        def update(properties: dict | None) -> dict:
            state = PageState.parse(properties)
            change(state)
            if now is not None:
                state.forget_before(now - REMEMBER_SECONDS)
            return state.properties(scope)

        try:
            saved = self.table.modify(self.PARTITION, safe_row_key(scope), update,
                                      STATE_ATTEMPTS)
        except ConcurrencyConflict:
            raise ChannelError(f"open PagerDuty incidents of {scope} kept changing",
                               transient=True) from None
        return PageState.parse(saved.properties if saved else None)

    def opened(self, scope: str, incident: OpenIncident, released: tuple[str, ...] = (),
               settles: Mark | None = None) -> None:
        """Record a page PagerDuty accepted; `released`: held alerts it covers; `settles`: the
        waiting resolve the caller sends next. A resolve that started waiting meanwhile, for
        this firing, makes the caller retry (it must be sent)."""
        def add(state: PageState) -> None:
            waiting = state.pending.get(incident.key)
            if waiting is not None and waiting != settles and \
                    not_after(incident.occurred, waiting.occurred) is not False:
                raise IncidentsChanged(f"a resolve of {incident.key} arrived meanwhile")
            if settles is None:
                state.pending.pop(incident.key, None)  # a resolve of an earlier firing
            state.triggering.pop(incident.key, None)
            state.incidents[incident.key] = incident
            for key in released:
                state.held.pop(key, None)
        self._change(scope, add, incident.opened_at)

    def intend(self, scope: str, incident: OpenIncident) -> None:
        """Record a trigger about to be sent, so that a crash after PagerDuty accepts it cannot
        leave an incident open there that Gatehouse never resolves."""
        def add(state: PageState) -> None:
            state.triggering.setdefault(incident.key, incident)
        self._change(scope, add, incident.opened_at)

    def hold(self, scope: str, key: str, entry: dict) -> bool:
        """Keep a storm-suppressed alert for later; False when the scope holds too many."""
        kept: list[str] = []

        def add(state: PageState) -> None:
            kept.clear()
            held = state.held
            if key in held:  # the same alert again: its first sighting stays the oldest
                held[key] = {**entry, "held_at": held[key]["held_at"]}
            elif len(held) < MAX_HELD:
                held[key] = entry
            else:
                return
            kept.append(key)
        self._change(scope, add)
        return bool(kept)

    def closed(self, scope: str, keys: tuple[str, ...], note, *,
               sent: tuple[str, ...] | None = None, waiting: tuple[str, ...] = (),
               now: float | None = None, occurred: str | None = None
               ) -> tuple[dict[str, OpenIncident], dict[str, dict]]:
        """Record a resolve: the incidents PagerDuty was sent a resolve for (`sent`; default all
        `keys`) are closed and remembered as resolved, `waiting` keys wait for their trigger, and
        the held alerts the note settles are dropped; returns (open incidents, held alerts).
        An incident among `keys` opened meanwhile, not sent a resolve, makes the caller retry."""
        sent = keys if sent is None else sent
        when = occurred_of(note) if occurred is None else occurred
        at = 0.0 if now is None else now

        def drop(state: PageState) -> None:
            surprise = [k for k in keys if k in state.open_or_triggering and k not in sent]
            if surprise:
                raise IncidentsChanged(f"{', '.join(surprise)} opened meanwhile")
            for key in sent:
                state.incidents.pop(key, None)
                state.triggering.pop(key, None)
                state.resolved[key] = Mark(at, when)
                state.pending.pop(key, None)
            for key in waiting:
                state.pending[key] = Mark(at, when)
            remaining = held_after_resolve(state.held, note, keys)
            state.held.clear()
            state.held.update(remaining)
        state = self._change(scope, drop, now)
        return state.incidents, state.held

    def settled(self, scope: str, key: str, waiting: Mark, now: float) -> None:
        """A waiting resolve whose trigger never paged (a storm held it): done with it."""
        def settle(state: PageState) -> None:
            if state.pending.get(key) == waiting:
                del state.pending[key]
                state.resolved[key] = Mark(now, waiting.occurred)
        self._change(scope, settle, now)


# ---- the channel ----

class PagerDutyChannel:
    name = "pagerduty"
    updates_in_place = False
    resends_safely = True  # a repeated trigger joins its dedup_key's incident; a resolve is a no-op

    def __init__(self, client, incidents: OpenIncidents):
        self.client = client
        self.incidents = incidents

    def deliver(self, delivery: Delivery) -> dict:
        import pagerduty

        try:
            return self._deliver(delivery)
        except pagerduty.HttpError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            transient = status == 429 or status >= 500 or status == 0
            raise ChannelError(f"PagerDuty Events API answered {status}", transient) from None
        except pagerduty.Error as exc:
            raise ChannelError(f"PagerDuty unreachable: {type(exc).__name__}", True) from None

    def _deliver(self, delivery: Delivery) -> dict:
        note = delivery.note
        scope = storm_scope(note)
        window = delivery.policy.page_storm_window_seconds
        state = self.incidents.state(scope)
        intent = page_intent(note, delivery.policy)
        plan = plan_page(note, intent, state.incidents, delivery.now, window,
                         resolved=state.resolved, pending=state.pending,
                         triggering=state.triggering,
                         rollback_paged=rollback_paged(note, delivery.policy))
        summary = {"action": plan.action, "incident": plan.key, "reason": plan.reason}
        if plan.action == "nothing":
            if plan.settles is not None:
                self.incidents.settled(scope, plan.key, plan.settles, delivery.now)
            return summary
        if plan.action == "suppress":
            was_held = plan.hold and self.incidents.hold(scope, plan.key, {
                "held_at": delivery.now, "endpoint": note.facts.get("endpoint"),
                "version": note.version, "occurred": occurred_of(note),
                "trigger": trigger_request(note, delivery, plan.key)})
            return {**summary, "held": bool(was_held)}
        if plan.action == "resolve" and intent == "resolve":
            return self._resolve(scope, plan, state, delivery)
        if plan.action == "trigger":
            incident = OpenIncident(plan.key, delivery.now, note.facts.get("endpoint"),
                                    occurred_of(note))
            self.incidents.intend(scope, incident)
            self.client.trigger(**trigger_request(note, delivery, plan.key))
            failpoint("pagerduty.triggered")
            self.incidents.opened(scope, incident, settles=plan.settles)
        if plan.settles is not None:  # the resolve that was waiting for this trigger
            self._send_resolves((plan.key,))
            self.incidents.closed(scope, (plan.key,), note, now=delivery.now,
                                  occurred=plan.settles.occurred)
            return {**summary, "resolved": [plan.key]}
        return summary

    def _send_resolves(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self.client.resolve(key)
        if keys:
            failpoint("pagerduty.resolved")

    def _resolve(self, scope: str, plan: PagePlan, state: PageState,
                 delivery: Delivery) -> dict:
        """Resolve the open incidents among the plan's keys; a key not open, not held and not
        resolved by as recent a resolve waits for its trigger. Then page the alerts a storm
        held, if they still fire and nothing recent is open any more."""
        note, occurred = delivery.note, occurred_of(delivery.note)
        sent = tuple(k for k in plan.resolve_keys if k in state.open_or_triggering)

        def resolved_already(key: str) -> bool:
            applied = state.resolved.get(key)
            return applied is not None and bool(not_after(occurred, applied.occurred))

        waiting = tuple(k for k in plan.resolve_keys
                        if k not in state.open_or_triggering and k not in state.held
                        and not resolved_already(k))
        self._send_resolves(sent)
        incidents, held = self.incidents.closed(scope, plan.resolve_keys, note, sent=sent,
                                                waiting=waiting, now=delivery.now)
        result: dict[str, object] = {"action": "resolve", "incidents": list(sent)}
        if waiting:
            result["waiting_for_trigger"] = list(waiting)
        # Triggered before it is recorded: a retry triggers the same dedup key again, which
        # PagerDuty folds into the incident it opened.
        after_storm = page_after_storm(held, incidents, delivery.now,
                                       delivery.policy.page_storm_window_seconds)
        if after_storm is not None:
            key, trigger = after_storm
            self.client.trigger(**trigger)
            failpoint("pagerduty.storm_paged")
            self.incidents.opened(scope, OpenIncident(key, delivery.now,
                                                      held[key].get("endpoint"),
                                                      held[key].get("occurred", "")),
                                  released=tuple(held))
            result["paged_after_storm"] = {"incident": key, "alerts": len(held)}
        return result
