"""When an alert retrains its model (pure): one ledger per model, one decision per alert.

Rules, in order, for a firing alert naming a model:
1. the policy must retrain on this alert kind, at this severity;
2. the alert's window is recorded as violating; k of the last n windows (ending at the alert's
   window, which must be the latest violating one and recent) must violate;
3. no run started within the cooldown;
4. fewer runs in flight than `max_concurrent_runs`.
Then a run starts, with an idempotency token derived from (model, reason, window, fingerprint).

Exactly once under an alert storm: the shell saves the ledger with its ETag before starting, so
of many workers deciding on the same ledger one wins and the others see its start (cooldown).
The winner's decision waits in `pending` until the run is confirmed; a redelivery of the same
alert event resumes that start (same token) instead of being refused by the cooldown.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.alerts.common import SEVERITY_RANK
from shared.events import MonitoringAlert
from shared.monitoring.policy import RetrainingPolicy

MAX_VIOLATIONS = 200
MAX_RUNS = 20


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PendingStart(_Model):
    event_id: str
    token: str
    parameters: dict[str, str]
    reason: str
    alert_fingerprint: str
    decided_at: float


class RunRecord(_Model):
    run_id: str
    token: str
    started_at: float
    alert_fingerprint: str
    finished: bool = False


class Ledger(_Model):
    model_name: str
    violations: tuple[int, ...] = ()
    last_started_at: float | None = None
    runs: tuple[RunRecord, ...] = ()
    pending: PendingStart | None = None

    def active_runs(self, now: float, run_timeout: float) -> list[RunRecord]:
        return [r for r in self.runs if not r.finished and now - r.started_at < run_timeout]


class RetrainingDecision(_Model):
    action: Literal["start", "resume", "skip"]
    reason: str
    ledger: Ledger
    start: PendingStart | None = None


def alert_window(alert: MonitoringAlert, received_at: float, window_seconds: float) -> int:
    """The window the alert is about: its `window` label (Gatehouse's monitor), else the window
    it arrived in."""
    label = alert.labels.get("window", "")
    return int(label) if label.lstrip("-").isdigit() else int(received_at // window_seconds)


def idempotency_token(model_name: str, reason: str, window: int, fingerprint: str) -> str:
    digest = hashlib.sha256(f"{model_name}|{reason}|{window}|{fingerprint}".encode())
    return "gh-" + digest.hexdigest()[:56]  # Databricks allows at most 64 characters


def decide(alert: MonitoringAlert, event_id: str, ledger: Ledger, policy: RetrainingPolicy,
           window_seconds: float, now: float) -> RetrainingDecision:
    def skip(reason: str, changed: Ledger = ledger) -> RetrainingDecision:
        return RetrainingDecision(action="skip", reason=reason, ledger=changed)

    if ledger.pending is not None and ledger.pending.event_id == event_id:
        return RetrainingDecision(action="resume", reason="resuming this alert's start",
                                  ledger=ledger, start=ledger.pending)
    if alert.status != "firing":
        return skip("resolved alerts start nothing")
    if not policy.enabled:
        return skip("retraining is disabled for this model")
    if alert.alert_kind not in policy.alert_kinds:
        return skip(f"{alert.alert_kind.value} alerts do not retrain (policy: "
                    f"{', '.join(k.value for k in policy.alert_kinds) or 'none'})")
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[policy.min_severity]:
        return skip(f"severity {alert.severity} is below {policy.min_severity}")

    window = alert_window(alert, now, window_seconds)
    current = int(now // window_seconds)
    if window < current - policy.n:
        return skip(f"window {window} is older than the last {policy.n} windows")
    violations = tuple(sorted({*ledger.violations, window}))[-MAX_VIOLATIONS:]
    recorded = ledger.model_copy(update={"violations": violations})
    if window < violations[-1]:
        return skip(f"window {window} is not the latest violating window ({violations[-1]})",
                    recorded)
    count = sum(1 for w in violations if window - policy.n < w <= window)
    if count < policy.k:
        return skip(f"{count} of the last {policy.n} windows violate; {policy.k} needed",
                    recorded)
    since_start = None if ledger.last_started_at is None else now - ledger.last_started_at
    if since_start is not None and since_start < policy.cooldown_seconds:
        wait = policy.cooldown_seconds - since_start
        return skip(f"in cooldown for another {wait:.0f}s after the last start", recorded)
    in_flight = len(ledger.active_runs(now, policy.run_timeout_seconds)) + (
        1 if ledger.pending is not None and now - ledger.pending.decided_at
        < policy.run_timeout_seconds else 0)
    if in_flight >= policy.max_concurrent_runs:
        return skip(f"{in_flight} run(s) in flight; the cap is {policy.max_concurrent_runs}",
                    recorded)

    reason = f"{alert.alert_kind.value}: {alert.title}"[:500]
    token = idempotency_token(alert.model_name or "", alert.alert_kind.value, window,
                              alert.fingerprint)
    start = PendingStart(
        event_id=event_id, token=token, reason=reason, alert_fingerprint=alert.fingerprint,
        decided_at=now,
        parameters={"model": alert.model_name or "", "reason": reason, "window": str(window),
                    "alert_fingerprint": alert.fingerprint})
    started = recorded.model_copy(update={"last_started_at": now, "pending": start})
    return RetrainingDecision(action="start", reason=f"{count} of the last {policy.n} windows "
                                                     f"violate", ledger=started, start=start)


def confirm(ledger: Ledger, start: PendingStart, run_id: str, now: float) -> Ledger:
    """The ledger once `start` is running as `run_id`."""
    runs = [r for r in ledger.runs if r.token != start.token]
    runs.append(RunRecord(run_id=run_id, token=start.token, started_at=now,
                          alert_fingerprint=start.alert_fingerprint))
    pending = None if ledger.pending and ledger.pending.token == start.token else ledger.pending
    return ledger.model_copy(update={"runs": tuple(runs[-MAX_RUNS:]), "pending": pending})


def drop_pending(ledger: Ledger, start: PendingStart) -> Ledger:
    """The ledger without `start` waiting (it will not run); the cooldown it began stays."""
    if ledger.pending is None or ledger.pending.token != start.token:
        return ledger
    return ledger.model_copy(update={"pending": None})


def mark_finished(ledger: Ledger, finished: set[str]) -> Ledger:
    if not any(r.run_id in finished and not r.finished for r in ledger.runs):
        return ledger
    return ledger.model_copy(update={"runs": tuple(
        r.model_copy(update={"finished": True}) if r.run_id in finished else r
        for r in ledger.runs)})
