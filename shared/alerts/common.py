"""What every alert format shares: the parsed result, kind and severity mapping, model identity
from labels, figures, and the stable fingerprint.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from shared.events import AlertKind, MonitoringAlert

SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}
SEVERITY_ALIASES = {
    "critical": "critical", "crit": "critical", "page": "critical", "fatal": "critical",
    "emergency": "critical", "p1": "critical", "sev0": "critical",
    "error": "error", "err": "error", "high": "error", "major": "error", "p2": "error",
    "sev1": "error",
    "warning": "warning", "warn": "warning", "medium": "warning", "minor": "warning",
    "p3": "warning", "sev2": "warning",
    "info": "info", "informational": "info", "low": "info", "none": "info", "notice": "info",
    "verbose": "info", "p4": "info", "sev3": "info", "sev4": "info",
}
MODEL_KEYS = ("model_name", "model", "registered_model", "mlflow_model")
VERSION_KEYS = ("model_version", "version")
ENDPOINT_KEYS = ("endpoint", "endpoint_name", "serving_endpoint")
KIND_KEYS = ("gatehouse_alert_kind", "alert_kind")
KIND_ALIASES = {"drift": AlertKind.FEATURE_DRIFT, "data_drift": AlertKind.FEATURE_DRIFT,
                "calibration": AlertKind.CALIBRATION_DRIFT,
                "performance": AlertKind.PERFORMANCE_DRIFT,
                "prediction_drift": AlertKind.PREDICTION_SHIFT,
                "errors": AlertKind.ERROR_RATE}

# Checked in this order: the first rule whose words all appear in the alert's names wins.
# Performance and prediction words come before the generic "drift", which they often contain.
KIND_RULES: tuple[tuple[AlertKind, tuple[frozenset[str], ...]], ...] = (
    (AlertKind.CALIBRATION_DRIFT, (frozenset({"calibration"}), frozenset({"ece"}),
                                   frozenset({"miscalibration"}), frozenset({"miscalibrated"}),
                                   frozenset({"reliability", "gap"}))),
    (AlertKind.PREDICTION_SHIFT, (frozenset({"prediction", "shift"}),
                                  frozenset({"prediction", "drift"}),
                                  frozenset({"prediction", "distribution"}),
                                  frozenset({"output", "drift"}), frozenset({"score", "drift"}),
                                  frozenset({"label", "drift"}))),
    (AlertKind.PERFORMANCE_DRIFT, (frozenset({"performance"}), frozenset({"accuracy"}),
                                   frozenset({"auc"}), frozenset({"f1"}),
                                   frozenset({"precision"}), frozenset({"recall"}),
                                   frozenset({"rmse"}), frozenset({"mae"}),
                                   frozenset({"cbpe"}), frozenset({"degradation"}))),
    (AlertKind.FEATURE_DRIFT, (frozenset({"drift"}), frozenset({"psi"}), frozenset({"skew"}),
                               frozenset({"population", "stability"}),
                               frozenset({"covariate", "shift"}),
                               frozenset({"distribution", "shift"}))),
    (AlertKind.LATENCY, (frozenset({"latency"}), frozenset({"p99"}), frozenset({"p95"}),
                         frozenset({"p50"}), frozenset({"duration"}),
                         frozenset({"response", "time"}), frozenset({"slow"}),
                         frozenset({"ttft"}), frozenset({"timeout"}))),
    (AlertKind.ERROR_RATE, (frozenset({"error"}), frozenset({"errors"}), frozenset({"5xx"}),
                            frozenset({"failure"}), frozenset({"failures"}),
                            frozenset({"failed"}), frozenset({"availability"}),
                            frozenset({"exception"}), frozenset({"exceptions"}),
                            frozenset({"unavailable"}))),
)
_TEXT_LABEL = re.compile(r"\b(model_name|model|model_version|version|endpoint_name|endpoint|"
                         r"serving_endpoint|alert_kind|gatehouse_alert_kind|severity)"
                         r"\s*[=:]\s*[\"']?([A-Za-z0-9_.\-/@]+)")
MAX_LABELS = 64
MAX_LABEL_LENGTH = 512
MAX_NAME_LENGTH = 1000   # characters of a rule or metric name read for its words
# Word boundaries inside names: fooBar, HTTPServer (before the last capital), High5xx (not P99).
_WORD_BOUNDARIES = (re.compile(r"(?<=[a-z0-9])(?=[A-Z])"), re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])"),
                    re.compile(r"(?<=[A-Za-z]{2})(?=[0-9])"))


@dataclass(frozen=True)
class InboundAlert:
    """One normalised alert and what identifies its delivery: `started` (the time the alert
    started firing, as the sender states it) with the fingerprint and status makes the dedupe
    key, so a resent notification of the same alert is enqueued once."""

    alert: MonitoringAlert
    started: str
    occurred_at: datetime

    @property
    def dedupe_key(self) -> str:
        return f"{self.alert.fingerprint}|{self.alert.status}|{self.started}"


@dataclass(frozen=True)
class AlertBatch:
    alerts: list[InboundAlert] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


class Lenient(BaseModel):
    # Senders add fields over time; the ones read here are still checked.
    model_config = ConfigDict(extra="ignore", defer_build=True)


def words(*texts: str | None) -> set[str]:
    """Lower-case words of names like `ModelFeatureDriftHigh`, `model_ece_high`, `P99 latency`."""
    found: set[str] = set()
    for text in texts:
        if not text:
            continue
        # Lookarounds, not groups: `([A-Z]+)([A-Z][a-z])` backtracks quadratically on a long
        # run of capitals, and a sender chooses these names (a 300 KB rule name froze the host).
        spaced = text[:MAX_NAME_LENGTH]
        for boundary in _WORD_BOUNDARIES:  # in turn: each sees the spaces the last one put
            spaced = boundary.sub(" ", spaced)
        found.update(w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w)
    return found


def explicit_kind(labels: Mapping[str, str]) -> AlertKind | None:
    for key in KIND_KEYS:
        value = (labels.get(key) or "").strip().lower().replace("-", "_").replace(" ", "_")
        if not value:
            continue
        if value in KIND_ALIASES:
            return KIND_ALIASES[value]
        try:
            return AlertKind(value)
        except ValueError:
            continue
    return None


def classify(labels: Mapping[str, str], *names: str | None) -> AlertKind:
    """The alert kind: an explicit `alert_kind` label, else the first rule matching the words of
    the rule/alert names (and labels such as `metric`)."""
    explicit = explicit_kind(labels)
    if explicit is not None:
        return explicit
    vocabulary = words(*names)
    for kind, rules in KIND_RULES:
        if any(rule <= vocabulary for rule in rules):
            return kind
    return AlertKind.OTHER


def severity(value: str | None, default: str = "warning") -> str:
    if value is None:
        return default
    return SEVERITY_ALIASES.get(str(value).strip().lower().replace(" ", ""), default)


def first(labels: Mapping[str, str], keys: Iterable[str]) -> str | None:
    for key in keys:
        value = labels.get(key)
        if value is not None and str(value).strip():
            return str(value).strip()
    return None


def identity(labels: Mapping[str, str]) -> dict[str, str | None]:
    """model_name, version and endpoint named by the labels, where they are."""
    return {"model_name": first(labels, MODEL_KEYS), "version": first(labels, VERSION_KEYS),
            "endpoint": first(labels, ENDPOINT_KEYS)}


def labels_from_text(text: str | None) -> dict[str, str]:
    """`model=fraud endpoint=fraud-prod` style pairs in free text (alert descriptions of
    senders that carry no labels)."""
    return {key: value for key, value in _TEXT_LABEL.findall(text or "")}


def number(value: object) -> float | None:
    """A finite float from a number or a numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip().rstrip("%"))
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def clean_labels(*sources: Mapping[str, object] | None) -> dict[str, str]:
    """Merged string labels (later sources win), None dropped, keys and values bounded."""
    merged: dict[str, str] = {}
    for source in sources:
        for key, value in (source or {}).items():
            if value is None or not str(key).strip():
                continue
            merged[str(key)[:MAX_LABEL_LENGTH]] = str(value)[:MAX_LABEL_LENGTH]
    return dict(list(merged.items())[:MAX_LABELS])


def fingerprint(source: str, *parts: object) -> str:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()
    return f"{source}:{digest[:24]}"


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


MAX_FINGERPRINT_CHARS = 200  # Alertmanager's are 16 hex digits; a longer one is stored as a digest


def build(*, source: str, kind: AlertKind, labels: dict[str, str], title: str, status: str,
          severity_name: str, figures: dict[str, float], fingerprint_value: str,
          started: str, occurred_at: datetime,
          overrides: Mapping[str, str | None] | None = None) -> InboundAlert:
    who = identity(labels)
    if len(fingerprint_value) > MAX_FINGERPRINT_CHARS:
        fingerprint_value = fingerprint(source, fingerprint_value)
    for key, value in (overrides or {}).items():
        if value:
            who[key] = value
    alert = MonitoringAlert(alert_kind=kind, source=source, severity=severity_name,
                            status=status, title=(title or "untitled alert")[:500],
                            figures={k[:200]: v for k, v in figures.items()},
                            labels=labels, fingerprint=fingerprint_value, **who)
    return InboundAlert(alert, started, utc(occurred_at))
