"""The trigger-retraining handler redone after a crash at each of its side effects: one run, one
announcement id, one rollback request id. Ledgers in memory, idempotency claims on Azurite."""

from __future__ import annotations

import time

import pytest

from functions.retraining import handle
from shared.events import AlertKind, Envelope, MonitoringAlert, RetrainingTriggered
from shared.foundation.failpoints import ENVIRONMENT, FailpointError
from shared.foundation.state import MemoryTable
from shared.monitoring.policy import MonitoringPolicy, RetrainingPolicy
from shared.monitoring.reactions import Launcher, LedgerStore, Reactions
from shared.monitoring.runners import RunnerError
from shared.rollout.machine import EndpointRecord, Phase, new_rollout

POLICY = MonitoringPolicy(retraining=RetrainingPolicy(entrypoint="train {model}",
                                                      cooldown_seconds=3600))


class Runner:
    """Starts one run per idempotency token, as Databricks' run_now does."""

    def __init__(self):
        self.runs: dict[str, str] = {}

    def start(self, start) -> str:
        return self.runs.setdefault(start.token, f"run-{len(self.runs) + 1}")

    def active(self, run_ids):
        return set(run_ids)


def alert(endpoint: str | None = None, kind=AlertKind.FEATURE_DRIFT) -> Envelope:
    return Envelope.wrap(MonitoringAlert(
        alert_kind=kind, source="alertmanager", model_name="fraud", version="3",
        endpoint=endpoint, severity="error", title="drift", figures={"psi": 0.4},
        fingerprint=f"fp-{time.time_ns()}"), source="/gatehouse/alerts/alertmanager")


def reactions(runner: Runner, published: list, launcher=None, record=None) -> Reactions:
    return Reactions(ledgers=LedgerStore(MemoryTable()), publish=published.append,
                     policy_for=lambda model: POLICY, rollout_record=lambda endpoint: record,
                     launcher=launcher or (lambda model, policy: Launcher(runner, runner.start)))


def crash_then_redo(body: bytes, shell: Reactions, point: str, monkeypatch) -> dict:
    monkeypatch.setenv(ENVIRONMENT, f"{point}=raise")
    with pytest.raises(FailpointError):
        handle(body, shell)
    monkeypatch.delenv(ENVIRONMENT)
    return handle(body, shell)  # redelivered; the failure released its claim


@pytest.mark.parametrize("point", ["monitoring.retraining_started",
                                   "monitoring.retraining_announced",
                                   "monitoring.retraining_confirmed"])
def test_a_retraining_redone_after_a_crash_starts_and_announces_once(storage_env, monkeypatch,
                                                                    point):
    runner, published = Runner(), []
    shell = reactions(runner, published)
    crash_then_redo(alert().to_json().encode(), shell, point, monkeypatch)
    assert list(runner.runs.values()) == ["run-1"]
    announced = {e.id: e for e in published if isinstance(e.data, RetrainingTriggered)}
    assert len(announced) == 1 and next(iter(announced.values())).data.job_run_id == "run-1"
    ledger, _ = shell.ledgers.load("fraud")
    assert [r.run_id for r in ledger.runs] == ["run-1"] and ledger.pending is None


def test_a_rollback_request_redone_after_a_crash_has_one_id(storage_env, monkeypatch):
    canary = new_rollout("fraud", "fraud-prod", "3", "2", Phase.CANARY, 0.0).model_copy(
        update={"routes": {"2": 95, "3": 5}, "step_index": 0})
    record = EndpointRecord(endpoint="fraud-prod", model_name="fraud", champion="2",
                            active=canary)
    runner, published = Runner(), []
    shell = reactions(runner, published, record=record)
    result = crash_then_redo(alert("fraud-prod", AlertKind.ERROR_RATE).to_json().encode(), shell,
                             "monitoring.rollback_requested", monkeypatch)
    assert result["rollback"]["requested"] is True
    assert {e.id for e in published} == {result["rollback"]["event_id"]}


def test_a_saved_start_whose_runner_is_gone_is_skipped_with_its_reason(storage_env, caplog):
    runner, published = Runner(), []
    attempts: list[str] = []

    def failing(model, policy):
        def start(pending):
            attempts.append(pending.token)
            raise RunnerError("the workspace is unreachable")
        return Launcher(runner, start)

    shell = reactions(runner, published, launcher=failing)
    body = alert().to_json().encode()
    with pytest.raises(RunnerError):
        handle(body, shell)
    ledger, _ = shell.ledgers.load("fraud")
    assert ledger.pending is not None  # the decision to start is saved, to be resumed

    shell.launcher = lambda model, policy: None  # the runner was unconfigured meanwhile
    result = handle(body, shell)
    assert result["retraining"]["action"] == "skip"
    assert "no retraining job" in result["retraining"]["reason"]
    assert "cannot resume the retraining" in caplog.text
    ledger, _ = shell.ledgers.load("fraud")
    assert ledger.pending is None and ledger.runs == ()
    assert attempts and published == []
