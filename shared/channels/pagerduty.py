"""PagerDuty through the `pagerduty` package's Events API v2 client.

Incidents are keyed by (model, endpoint, alert kind): a trigger with the same key joins the open
incident in PagerDuty. A rollback that completes resolves every open incident of that model on
that endpoint; a resolved alert resolves its own. Storm control: while one incident for a model is
open and younger than the policy's storm window, further alerts for that model do not page again
(they still reach Slack and Teams). They are held, not forgotten: when the storm's incidents are
resolved, the held alerts that are still firing get one page, "still firing after an alert storm".
A held alert that resolves meanwhile, or is about the version a completed rollback removed, is
dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from shared.channels.base import ChannelError, Delivery, event_kind, page_intent
from shared.foundation.state import ConcurrencyConflict, Row, Table, safe_row_key

# PagerDuty's severities have the same names as Gatehouse's; the map makes the contract explicit.
PAGERDUTY_SEVERITY = {"info": "info", "warning": "warning", "error": "error",
                      "critical": "critical"}
ROLLBACK_KINDS = ("rollout.rollback_requested", "rollout.rollback_completed")
MAX_DEDUP_KEY = 255
MAX_HELD = 20  # per storm scope; beyond that an alert only reaches the chat channels
STATE_ATTEMPTS = 8


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


@dataclass(frozen=True)
class PagePlan:
    action: Literal["trigger", "resolve", "suppress", "nothing"]
    key: str
    resolve_keys: tuple[str, ...] = ()
    reason: str = ""
    hold: bool = False  # suppressed by a storm: page it if it still fires when the storm ends


def _recent(open_incidents: dict[str, OpenIncident], now: float,
            storm_window_seconds: float) -> list[OpenIncident]:
    return sorted((i for i in open_incidents.values() if now - i.opened_at < storm_window_seconds),
                  key=lambda i: i.opened_at)


def plan_page(note, intent: str | None, open_incidents: dict[str, OpenIncident], now: float,
              storm_window_seconds: float) -> PagePlan:
    key = incident_key(note)
    if intent is None:
        return PagePlan("nothing", key, reason="not a paging event")
    if intent == "resolve":
        keys = [key]
        if event_kind(note) == "rollout.rollback_completed":
            endpoint = note.facts.get("endpoint")
            keys += sorted(k for k, incident in open_incidents.items()
                           if k != key and (incident.endpoint in (None, endpoint)))
        return PagePlan("resolve", key, tuple(keys), "resolved")
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


# ---- open incidents (and held alerts) on the state table ----

class OpenIncidents:
    PARTITION = "pagerduty"

    def __init__(self, table: Table):
        self.table = table

    def read(self, scope: str) -> tuple[dict[str, OpenIncident], dict[str, dict]]:
        """(open incidents, held alerts) of a storm scope."""
        return self._parse(self.table.get(self.PARTITION, safe_row_key(scope)))

    @staticmethod
    def _parse(row: Row | None) -> tuple[dict[str, OpenIncident], dict[str, dict]]:
        if row is None:
            return {}, {}
        incidents = {key: OpenIncident(key, value["opened_at"], value.get("endpoint"))
                     for key, value in json.loads(row.properties.get("incidents") or "{}").items()}
        return incidents, json.loads(row.properties.get("held") or "{}")

    def _change(self, scope: str, change) -> tuple[dict[str, OpenIncident], dict[str, dict]]:
        """Apply `change(incidents, held)` to the raw dicts with an ETag; return the result."""
        def update(properties: dict | None) -> dict:
            incidents = json.loads(properties.get("incidents") or "{}") if properties else {}
            held = json.loads(properties.get("held") or "{}") if properties else {}
            change(incidents, held)
            return {"scope": scope, "incidents": json.dumps(incidents), "held": json.dumps(held)}

        try:
            saved = self.table.modify(self.PARTITION, safe_row_key(scope), update,
                                      STATE_ATTEMPTS)
        except ConcurrencyConflict:
            raise ChannelError(f"open PagerDuty incidents of {scope} kept changing",
                               transient=True) from None
        return self._parse(saved)

    def opened(self, scope: str, incident: OpenIncident, released: tuple[str, ...] = ()) -> None:
        """Record a page; `released`: held alerts it covers."""
        def add(incidents: dict, held: dict) -> None:
            incidents[incident.key] = {"opened_at": incident.opened_at,
                                       "endpoint": incident.endpoint}
            for key in released:
                held.pop(key, None)
        self._change(scope, add)

    def hold(self, scope: str, key: str, entry: dict) -> bool:
        """Keep a storm-suppressed alert for later; False when the scope holds too many."""
        kept: list[str] = []

        def add(incidents: dict, held: dict) -> None:
            kept.clear()
            if key in held:  # the same alert again: its first sighting stays the oldest
                held[key] = {**entry, "held_at": held[key]["held_at"]}
            elif len(held) < MAX_HELD:
                held[key] = entry
            else:
                return
            kept.append(key)
        self._change(scope, add)
        return bool(kept)

    def closed(self, scope: str, keys: tuple[str, ...], note
               ) -> tuple[dict[str, OpenIncident], dict[str, dict]]:
        """Drop resolved incidents and the held alerts the resolve settles; return the rest."""
        def drop(incidents: dict, held: dict) -> None:
            for key in keys:
                incidents.pop(key, None)
            remaining = held_after_resolve(held, note, keys)
            held.clear()
            held.update(remaining)
        return self._change(scope, drop)


# ---- the channel ----

class PagerDutyChannel:
    name = "pagerduty"
    updates_in_place = False

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
        incidents, _ = self.incidents.read(scope)
        plan = plan_page(note, page_intent(note, delivery.policy), incidents, delivery.now, window)
        if plan.action == "nothing":
            return {"action": plan.action, "incident": plan.key, "reason": plan.reason}
        if plan.action == "suppress":
            was_held = plan.hold and self.incidents.hold(scope, plan.key, {
                "held_at": delivery.now, "endpoint": note.facts.get("endpoint"),
                "version": note.version, "trigger": trigger_request(note, delivery, plan.key)})
            return {"action": plan.action, "incident": plan.key, "reason": plan.reason,
                    "held": bool(was_held)}
        if plan.action == "resolve":
            for key in plan.resolve_keys:
                self.client.resolve(key)
            incidents, held = self.incidents.closed(scope, plan.resolve_keys, note)
            result: dict[str, object] = {"action": "resolve",
                                         "incidents": list(plan.resolve_keys)}
            # Triggered before it is recorded: a retry triggers the same dedup key again, which
            # PagerDuty folds into the incident it opened.
            after_storm = page_after_storm(held, incidents, delivery.now, window)
            if after_storm is not None:
                key, trigger = after_storm
                self.client.trigger(**trigger)
                self.incidents.opened(scope, OpenIncident(key, delivery.now,
                                                          held[key].get("endpoint")),
                                      released=tuple(held))
                result["paged_after_storm"] = {"incident": key, "alerts": len(held)}
            return result
        self.client.trigger(**trigger_request(note, delivery, plan.key))
        self.incidents.opened(scope, OpenIncident(plan.key, delivery.now,
                                                  note.facts.get("endpoint")))
        return {"action": "trigger", "incident": plan.key}
