"""Databricks SQL alerts through a webhook notification destination.

The current payload (`event: alert_state_change`) nests the alert under `alert.alert` with its
`evaluations` (source column, comparison, threshold, state, last_evaluated_at); legacy alerts
send the alert flat under `alert`, with a lower-case `state`. TRIGGERED fires, OK resolves;
UNKNOWN and ERROR say nothing about a model and are acknowledged without an event.

SQL alerts carry no labels, so the model, version and endpoint are read from `key=value`
pairs in the alert's name or description (e.g. "model=fraud endpoint=fraud-prod"); the kind
from an `alert_kind=` pair, else from the alert name and the evaluated column's name
(`psi_max`, `ece`, `p99_latency_ms`, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone

from shared.alerts import common
from shared.platform.http import BodyError, json_object

SOURCE = "databricks-sql"
FIRING, RESOLVED = "TRIGGERED", "OK"
SILENT_STATES = {"UNKNOWN", "ERROR", "UNSPECIFIED"}
_STATUS_IN_TITLE = re.compile(r"changed status to ([A-Za-z]+)")


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise BodyError(f"not a valid Databricks SQL alert webhook: {where} must be an object",
                           [f"{where}: Input should be a valid dictionary"])
    return value


def _when(text: object) -> datetime | None:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return datetime.fromtimestamp(text / 1000, tz=timezone.utc)  # epoch milliseconds
    if isinstance(text, str) and text.strip():
        try:
            return common.utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _threshold(evaluation: dict) -> float | None:
    threshold = evaluation.get("threshold")
    if isinstance(threshold, dict):
        value = threshold.get("value")
        if isinstance(value, dict):
            return common.number(value.get("double_value"))
    options = evaluation.get("options")
    return common.number(options.get("value")) if isinstance(options, dict) else None


def parse(body: bytes) -> common.AlertBatch:
    document = json_object(body)
    event = document.get("event")
    if event != "alert_state_change":
        raise BodyError(f"not a Databricks SQL alert webhook: event is {event!r}, expected "
                           f"'alert_state_change'", ["event: expected 'alert_state_change'"])
    outer = _object(document.get("alert"), "alert")
    inner = _object(outer["alert"], "alert.alert") if "alert" in outer else outer
    alert_id = inner.get("id")
    name = inner.get("name") or inner.get("display_name")
    if alert_id in (None, "") or not isinstance(name, str) or not name.strip():
        problems = [f"{where}: Field required" for where, missing in
                    (("alert.alert.id", alert_id in (None, "")),
                     ("alert.alert.name", not isinstance(name, str) or not name.strip()))
                    if missing]
        raise BodyError("not a valid Databricks SQL alert webhook: " + "; ".join(problems),
                           problems)
    evaluations = [e for e in inner.get("evaluations") or [] if isinstance(e, dict)]
    if isinstance(inner.get("evaluation"), dict):
        evaluations.append(inner["evaluation"])
    latest = evaluations[-1] if evaluations else {}
    state = latest.get("state") or inner.get("state") or outer.get("state")
    if not state:
        in_title = _STATUS_IN_TITLE.search(str(outer.get("title") or ""))
        state = in_title.group(1) if in_title else None
    if not isinstance(state, str) or not state.strip():
        raise BodyError("not a valid Databricks SQL alert webhook: no alert state (expected "
                           "TRIGGERED or OK in the evaluation's state)",
                           ["alert.alert.evaluations[].state: Field required"])
    state = state.strip().upper()
    if state in SILENT_STATES:
        return common.AlertBatch([], [f"alert {name!r} is {state}: nothing to act on"])
    if state not in (FIRING, RESOLVED):
        raise BodyError(f"unknown Databricks SQL alert state {state!r}; expected TRIGGERED, "
                           f"OK, UNKNOWN or ERROR", [f"state: {state!r} is not a known state"])

    source, options = latest.get("source"), inner.get("options")
    column = (source.get("name") if isinstance(source, dict)
              else options.get("column") if isinstance(options, dict) else None)
    texts = [name, inner.get("custom_description"), outer.get("description"),
             inner.get("custom_summary")]
    labels = common.clean_labels(*(common.labels_from_text(t) for t in texts if
                                   isinstance(t, str)),
                                 {"alert_id": alert_id, "column": column,
                                  "comparison": latest.get("comparison_operator")})
    figures = {}
    threshold = _threshold(latest) if latest else _threshold(inner)
    if threshold is not None:
        figures["threshold"] = threshold
    for key in ("value", "query_result_value"):
        value = common.number(latest.get(key) if key in latest else inner.get(key))
        if value is not None:
            figures["value"] = value
    evaluated = (_when(latest.get("last_evaluated_at")) or _when(inner.get("last_triggered_at"))
                 or _when(inner.get("updated_at")))
    started = (evaluated.isoformat() if evaluated
               else hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest())
    kind = common.classify(labels, name, column)
    title = str(outer.get("title") or name)
    return common.AlertBatch([common.build(
        source=SOURCE, kind=kind, labels=labels, title=title,
        status="firing" if state == FIRING else "resolved",
        severity_name=common.severity(labels.get("severity")), figures=figures,
        fingerprint_value=common.fingerprint(SOURCE, alert_id, column or ""),
        started=started, occurred_at=evaluated or datetime.now(timezone.utc))])
