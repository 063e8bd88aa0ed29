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
from datetime import UTC, datetime

from shared.alerts import common
from shared.foundation.http import BodyError, json_object

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
    try:
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return datetime.fromtimestamp(text / 1000, tz=UTC)  # epoch milliseconds
        if isinstance(text, str) and text.strip():
            return common.utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))
    except (ValueError, OverflowError, OSError):  # not a time, or beyond what datetime holds
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
    outer, inner = _alert(document)
    alert_id, name = _identity(inner)
    latest = _latest_evaluation(inner)
    state = _state(latest, inner, outer)
    if state in SILENT_STATES:
        return common.AlertBatch([], [f"alert {name!r} is {state}: nothing to act on"])
    column = _column(latest, inner)
    labels = _labels(name, alert_id, column, latest, inner, outer)
    evaluated = (_when(latest.get("last_evaluated_at")) or _when(inner.get("last_triggered_at"))
                 or _when(inner.get("updated_at")))
    # Without an evaluation time, the document itself identifies the episode.
    started = (evaluated.isoformat() if evaluated
               else hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest())
    return common.AlertBatch([common.build(
        source=SOURCE, kind=common.classify(labels, name, column), labels=labels,
        title=str(outer.get("title") or name),
        status="firing" if state == FIRING else "resolved",
        severity_name=common.severity(labels.get("severity")),
        figures=_figures(latest, inner),
        fingerprint_value=common.fingerprint(SOURCE, alert_id, column or ""),
        started=started, occurred_at=evaluated or datetime.now(UTC))])


def _alert(document: dict) -> tuple[dict, dict]:
    """(outer, inner): the current format nests the alert under alert.alert, legacy is flat."""
    event = document.get("event")
    if event != "alert_state_change":
        raise BodyError(f"not a Databricks SQL alert webhook: event is {event!r}, expected "
                        f"'alert_state_change'", ["event: expected 'alert_state_change'"])
    outer = _object(document.get("alert"), "alert")
    inner = _object(outer["alert"], "alert.alert") if "alert" in outer else outer
    return outer, inner


def _identity(inner: dict) -> tuple[object, str]:
    alert_id = inner.get("id")
    name = inner.get("name") or inner.get("display_name")
    missing = [where for where, absent in
               (("alert.alert.id", alert_id in (None, "")),
                ("alert.alert.name", not isinstance(name, str) or not name.strip()))
               if absent]
    if missing or not isinstance(name, str):  # a non-str name is in `missing` already
        problems = [f"{where}: Field required" for where in missing]
        raise BodyError("not a valid Databricks SQL alert webhook: " + "; ".join(problems),
                        problems)
    return alert_id, name


def _latest_evaluation(inner: dict) -> dict:
    listed = inner.get("evaluations")
    evaluations = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    if isinstance(inner.get("evaluation"), dict):
        evaluations.append(inner["evaluation"])
    return evaluations[-1] if evaluations else {}


def _state(latest: dict, inner: dict, outer: dict) -> str:
    """TRIGGERED, OK or a silent state, from the evaluation, the alert, or the title."""
    state = latest.get("state") or inner.get("state") or outer.get("state")
    if not state:
        in_title = _STATUS_IN_TITLE.search(str(outer.get("title") or ""))
        state = in_title.group(1) if in_title else None
    if not isinstance(state, str) or not state.strip():
        raise BodyError("not a valid Databricks SQL alert webhook: no alert state (expected "
                        "TRIGGERED or OK in the evaluation's state)",
                        ["alert.alert.evaluations[].state: Field required"])
    state = state.strip().upper()
    if state not in (FIRING, RESOLVED) and state not in SILENT_STATES:
        raise BodyError(f"unknown Databricks SQL alert state {state!r}; expected TRIGGERED, "
                        f"OK, UNKNOWN or ERROR", [f"state: {state!r} is not a known state"])
    return state


def _column(latest: dict, inner: dict) -> str | None:
    """The evaluated column's name; anything but text there names no column."""
    source, options = latest.get("source"), inner.get("options")
    if isinstance(source, dict):
        column = source.get("name")
    else:
        column = options.get("column") if isinstance(options, dict) else None
    return column if isinstance(column, str) else None


def _labels(name: str, alert_id: object, column: str | None, latest: dict, inner: dict,
            outer: dict) -> dict[str, str]:
    """`key=value` pairs written in the alert's texts, and what identifies the alert."""
    texts = [name, inner.get("custom_description"), outer.get("description"),
             inner.get("custom_summary")]
    return common.clean_labels(*(common.labels_from_text(t) for t in texts
                                 if isinstance(t, str)),
                               {"alert_id": alert_id, "column": column,
                                "comparison": latest.get("comparison_operator")})


def _figures(latest: dict, inner: dict) -> dict[str, float]:
    figures = {}
    threshold = _threshold(latest) if latest else _threshold(inner)
    if threshold is not None:
        figures["threshold"] = threshold
    for key in ("value", "query_result_value"):
        value = common.number(latest.get(key) if key in latest else inner.get(key))
        if value is not None:
            figures["value"] = value
    return figures
