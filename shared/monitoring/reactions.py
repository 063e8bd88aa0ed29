"""What Gatehouse does about a monitoring alert (the trigger-retraining queue gets every one):

1. roll back a canary the alert implicates: the alert names an endpoint whose active rollout's
   challenger is the alerting version (pure: `rollback_for`); the rollout's open_rollback
   handler carries it out;
2. retrain the model when the policy says so (pure: shared/monitoring/retraining.py), at most
   once per cooldown and within the cap on runs in flight, and announce RetrainingTriggered.

Notifications for the alert itself come from the router, for every alert, firing or resolved.

Redone from the start after a crash, each effect happens once: the rollback request and the
RetrainingTriggered announcement have ids derived from the alert event (the router drops a
repeat), and a start saved in the ledger is resumed with its idempotency token (the runner
returns the run it started). The announcement goes out before the run is confirmed in the
ledger: a redo after the confirmation finds the cooldown and announces nothing new.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from shared.alerts.common import SEVERITY_RANK
from shared.events import (
    Decision,
    Envelope,
    MonitoringAlert,
    RetrainingTriggered,
    RollbackRequested,
)
from shared.foundation import runtime
from shared.foundation.failpoints import failpoint
from shared.foundation.settings import Settings
from shared.foundation.state import StateTable, Table, safe_row_key
from shared.monitoring import retraining
from shared.monitoring.policy import MonitoringPolicy, RollbackOnAlertPolicy
from shared.monitoring.runners import DatabricksJobRunner, LocalRunner

log = logging.getLogger("gatehouse.retraining")
SOURCE = "/gatehouse/retraining"
ACTOR = "gatehouse:monitor"
LEDGER_TABLE = "gatehouseretraining"
LEDGER_PARTITION = "ledgers"
SAVE_ATTEMPTS = 30
SAVE_JITTER_SECONDS = 0.05  # spreads out the workers of an alert storm


def registry_of(model_name: str) -> str:
    return "unity-catalog" if model_name.count(".") == 2 else "mlflow"


def rollback_for(alert: MonitoringAlert, record, policy: RollbackOnAlertPolicy
                 ) -> RollbackRequested | None:
    """A rollback request when the firing alert concerns the challenger of the endpoint's active
    rollout (`record`: the rollout's EndpointRecord, or None)."""
    from shared.rollout.machine import Phase

    if (alert.status != "firing" or not policy.enabled or not alert.endpoint
            or not alert.version or record is None or record.active is None):
        return None
    active = record.active
    if active.phase not in (Phase.PENDING, Phase.CANARY) or active.challenger != alert.version:
        return None
    if alert.alert_kind not in policy.alert_kinds:
        return None
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[policy.min_severity]:
        return None
    reason = (f"{alert.alert_kind.value.replace('_', ' ')} alert from {alert.source} on "
              f"challenger v{alert.version} during its canary ({active.traffic_percent}% of "
              f"traffic): {alert.title}")
    return RollbackRequested(model_name=record.model_name, registry=registry_of(record.model_name),
                             version=active.challenger, endpoint=record.endpoint,
                             decision=Decision(actor=ACTOR, reason=reason[:2000],
                                               metrics=dict(alert.figures)))


class LedgerStore:
    def __init__(self, table: Table):
        self.table = table

    @classmethod
    def connect(cls, connection_string: str) -> LedgerStore:
        return cls(StateTable(connection_string, LEDGER_TABLE))

    @staticmethod
    def _ledger(model_name: str, properties: dict | None) -> retraining.Ledger:
        if properties is None:
            return retraining.Ledger(model_name=model_name)
        return retraining.Ledger.model_validate_json(properties["ledger"])

    def load(self, model_name: str) -> tuple[retraining.Ledger, str | None]:
        row = self.table.get(LEDGER_PARTITION, safe_row_key(model_name))
        if row is None:
            return self._ledger(model_name, None), None
        return self._ledger(model_name, row.properties), row.etag

    def update(self, model_name: str,
               change: Callable[[retraining.Ledger], retraining.Ledger]) -> None:
        """Save `change(ledger)` with the ledger's ETag, re-reading after a lost race; nothing is
        written when the change leaves the ledger as it was."""
        def update(properties: dict | None) -> dict | None:
            ledger = self._ledger(model_name, properties)
            changed = change(ledger)
            if changed == ledger:
                return None
            return {"model_name": changed.model_name, "ledger": changed.model_dump_json()}

        self.table.modify(LEDGER_PARTITION, safe_row_key(model_name), update,
                          SAVE_ATTEMPTS, SAVE_JITTER_SECONDS)


@dataclass
class Launcher:
    """The configured runner for one model: a Databricks job or the local entrypoint."""

    runner: object
    start: Callable[[retraining.PendingStart], str]


def launcher_for(model_name: str, policy: MonitoringPolicy, app_settings: Settings | None = None,
                 local_runner: LocalRunner | None = None) -> Launcher | None:
    app_settings = runtime.settings() if app_settings is None else app_settings
    settings = policy.retraining
    job_id = settings.job_id
    if app_settings.databricks_host and job_id:
        runner = DatabricksJobRunner.from_settings(app_settings)
        return Launcher(runner, lambda start: runner.start(job_id, start.parameters, start.token))
    command = settings.command(model_name)
    if command:
        local = local_runner or LocalRunner(app_settings.retraining_runs_dir)
        return Launcher(local, lambda start: local.start(command, start.parameters, start.token))
    return None


class Reactions:
    def __init__(self, *, ledgers: LedgerStore, publish: Callable[[Envelope], object],
                 policy_for: Callable[[str | None], MonitoringPolicy],
                 rollout_record: Callable[[str], object],
                 launcher: Callable[[str, MonitoringPolicy], Launcher | None],
                 clock: Callable[[], float] = time.time):
        self.ledgers, self.publish, self.policy_for = ledgers, publish, policy_for
        self.rollout_record, self.launcher, self.clock = rollout_record, launcher, clock

    def react(self, envelope: Envelope) -> dict:
        alert = envelope.data
        if not isinstance(alert, MonitoringAlert):
            raise ValueError(f"{envelope.id} is a {envelope.type}, not monitoring.alert")
        policy = self.policy_for(alert.model_name)
        outcome = {"rollback": self._rollback(envelope, alert, policy)}
        outcome["retraining"] = self._retrain(envelope, alert, policy)
        return outcome

    def _rollback(self, envelope: Envelope, alert: MonitoringAlert,
                  policy: MonitoringPolicy) -> dict:
        if alert.status != "firing" or not alert.endpoint or not alert.version:
            return {"requested": False, "reason": "the alert names no served version"}
        request = rollback_for(alert, self.rollout_record(alert.endpoint), policy.rollback)
        if request is None:
            return {"requested": False, "reason": "no active canary of this version"}
        published = envelope.derived(request, source=SOURCE)
        self.publish(published)
        failpoint("monitoring.rollback_requested")
        log.warning("alert %s implicates challenger v%s on %s: rollback requested (%s)",
                    alert.fingerprint, alert.version, alert.endpoint, published.id)
        return {"requested": True, "event_id": published.id}

    def _retrain(self, envelope: Envelope, alert: MonitoringAlert,
                 policy: MonitoringPolicy) -> dict:
        if not alert.model_name:
            return {"action": "skip", "reason": "the alert names no model"}
        if alert.status == "firing" and alert.alert_kind in policy.retraining.alert_kinds:
            launcher = self.launcher(alert.model_name, policy)
        else:
            launcher = None
        decision = self._decide(envelope, alert, policy, launcher)
        if decision.action == "skip":
            return {"action": "skip", "reason": decision.reason}
        start = decision.start
        if start is None or launcher is None:
            # decide() gives every start and resume its PendingStart, and _judge skips a start
            # without a launcher: this is a resume whose runner was unconfigured since.
            return self._abandon(alert.model_name, start, decision.action)
        run_id = launcher.start(start)
        failpoint("monitoring.retraining_started")
        triggered = RetrainingTriggered(
            model_name=alert.model_name, registry=registry_of(alert.model_name),
            reason=start.reason, alert_fingerprint=alert.fingerprint, job_run_id=run_id,
            decision=Decision(actor=ACTOR, reason=f"{start.reason} ({decision.reason})"[:2000],
                              metrics=dict(alert.figures)))
        published = envelope.derived(triggered, source=SOURCE)
        self.publish(published)
        failpoint("monitoring.retraining_announced")
        self._confirm(alert.model_name, start, run_id)
        failpoint("monitoring.retraining_confirmed")
        log.info("retraining %s started as run %s for alert %s", alert.model_name, run_id,
                 alert.fingerprint)
        return {"action": decision.action, "run_id": run_id, "event_id": published.id,
                "token": start.token}

    def _abandon(self, model_name: str, start: retraining.PendingStart | None,
                 action: str) -> dict:
        """A saved start that cannot go on (no runner is configured any more): skipped, and
        taken off the ledger so it does not count as a run in flight."""
        reason = (f"cannot {action} the retraining: no retraining job (job_id with "
                  f"DATABRICKS_HOST) or local entrypoint is configured for this model any more")
        log.warning("%s: %s", model_name, reason)
        if start is not None:
            self.ledgers.update(model_name, lambda ledger: retraining.drop_pending(ledger, start))
        return {"action": "skip", "reason": reason}

    def _decide(self, envelope, alert, policy, launcher) -> retraining.RetrainingDecision:
        decided: list[retraining.RetrainingDecision] = []

        def change(ledger: retraining.Ledger) -> retraining.Ledger:
            decided[:] = [self._judge(envelope, alert, policy, launcher, ledger)]
            return decided[0].ledger

        self.ledgers.update(alert.model_name, change)
        return decided[0]

    def _judge(self, envelope, alert, policy, launcher,
               ledger: retraining.Ledger) -> retraining.RetrainingDecision:
        current = ledger
        if launcher is not None:
            open_runs = [r.run_id for r in ledger.runs if not r.finished]
            if open_runs:
                finished = set(open_runs) - launcher.runner.active(open_runs)
                current = retraining.mark_finished(ledger, finished)
        decision = retraining.decide(alert, envelope.id, current, policy.retraining,
                                     policy.retraining_window(), self.clock())
        if decision.action == "start" and launcher is None:
            return retraining.RetrainingDecision(
                action="skip", ledger=ledger, reason="no retraining job (job_id with "
                "DATABRICKS_HOST) or local entrypoint is configured for this model")
        return decision

    def _confirm(self, model_name: str, start: retraining.PendingStart, run_id: str) -> None:
        self.ledgers.update(model_name, lambda ledger: retraining.confirm(ledger, start, run_id,
                                                                          self.clock()))


def reactions_from_env() -> Reactions:
    from shared.foundation import runtime
    from shared.policy import monitoring_policy_for
    from shared.rollout.store import RolloutStore

    connection = runtime.storage_connection()
    rollouts = RolloutStore.connect(connection)
    return Reactions(ledgers=LedgerStore.connect(connection), publish=runtime.bus().publish,
                     policy_for=monitoring_policy_for,
                     rollout_record=lambda endpoint: rollouts.load(endpoint).record,
                     launcher=launcher_for)
