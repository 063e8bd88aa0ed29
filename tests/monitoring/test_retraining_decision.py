"""The pure decisions: when an alert retrains (cooldown, cap, k-of-n, kinds) and when it rolls
back a canary."""

from __future__ import annotations

import pytest

from shared.events import AlertKind, MonitoringAlert
from shared.monitoring.policy import MonitoringPolicy, RetrainingPolicy, RollbackOnAlertPolicy
from shared.monitoring.reactions import rollback_for
from shared.monitoring.retraining import Ledger, confirm, decide, idempotency_token, mark_finished
from shared.rollout.machine import EndpointRecord, Phase, new_rollout

W = 300.0
NOW = 1_000_000 * W + 10  # early in window 1,000,000


def alert(kind=AlertKind.FEATURE_DRIFT, status="firing", severity="warning", window=None,
          fingerprint="gatehouse:abc", model="fraud", version="3", endpoint="fraud-prod"):
    labels = {} if window is None else {"window": str(window)}
    return MonitoringAlert(alert_kind=kind, source="gatehouse", model_name=model, version=version,
                           endpoint=endpoint, severity=severity, status=status, title="PSI high",
                           figures={"feature_psi": 0.3}, labels=labels, fingerprint=fingerprint)


def ledger(**changes) -> Ledger:
    return Ledger(model_name="fraud", **changes)


POLICY = RetrainingPolicy(cooldown_seconds=3600, max_concurrent_runs=1)


def test_a_drift_alert_starts_a_run_with_parameters_and_a_derived_token():
    decision = decide(alert(window=999_999), "event-1", ledger(), POLICY, W, NOW)
    assert decision.action == "start"
    start = decision.start
    assert start.parameters == {"model": "fraud", "reason": "feature_drift: PSI high",
                                "window": "999999", "alert_fingerprint": "gatehouse:abc"}
    assert start.token == idempotency_token("fraud", "feature_drift", 999_999, "gatehouse:abc")
    assert len(start.token) <= 64
    assert decision.ledger.last_started_at == NOW and decision.ledger.pending == start


def test_the_same_alert_event_resumes_its_own_start_instead_of_hitting_the_cooldown():
    first = decide(alert(), "event-1", ledger(), POLICY, W, NOW)
    again = decide(alert(), "event-1", first.ledger, POLICY, W, NOW + 5)
    assert again.action == "resume" and again.start == first.start
    other = decide(alert(fingerprint="gatehouse:other"), "event-2", first.ledger, POLICY, W,
                   NOW + 5)
    assert other.action == "skip" and "cooldown" in other.reason


def test_cooldown_then_cap_on_runs_in_flight():
    started = decide(alert(), "e1", ledger(), POLICY, W, NOW)
    running = confirm(started.ledger, started.start, "run-1", NOW)
    assert running.pending is None and running.runs[0].run_id == "run-1"
    later = NOW + 3601
    capped = decide(alert(), "e2", running, POLICY, W, later)
    assert capped.action == "skip" and "1 run(s) in flight; the cap is 1" in capped.reason
    finished = mark_finished(running, {"run-1"})
    assert decide(alert(), "e3", finished, POLICY, W, later).action == "start"
    roomier = POLICY.model_copy(update={"max_concurrent_runs": 2})
    assert decide(alert(), "e4", running, roomier, W, later).action == "start"


def test_runs_older_than_the_timeout_no_longer_count():
    started = decide(alert(), "e1", ledger(), POLICY, W, NOW)
    running = confirm(started.ledger, started.start, "run-1", NOW)
    much_later = NOW + POLICY.run_timeout_seconds + 1
    assert decide(alert(), "e2", running, POLICY, W, much_later).action == "start"


@pytest.mark.parametrize("kind", [AlertKind.LATENCY, AlertKind.ERROR_RATE, AlertKind.OTHER,
                                  AlertKind.PREDICTION_SHIFT])
def test_kinds_the_policy_does_not_name_never_retrain(kind):
    decision = decide(alert(kind=kind), "e", ledger(), POLICY, W, NOW)
    assert decision.action == "skip" and "do not retrain" in decision.reason
    assert decision.ledger == ledger()


def test_resolved_low_severity_and_disabled_skip():
    assert decide(alert(status="resolved"), "e", ledger(), POLICY, W, NOW).action == "skip"
    assert "below" in decide(alert(severity="info"), "e", ledger(), POLICY, W, NOW).reason
    off = POLICY.model_copy(update={"enabled": False})
    assert "disabled" in decide(alert(), "e", ledger(), off, W, NOW).reason


def test_k_of_n_windows_and_the_latest():
    policy = RetrainingPolicy(k=2, n=3, cooldown_seconds=0)
    current = int(NOW // W)
    first = decide(alert(window=current - 2), "e1", ledger(), policy, W, NOW)
    assert first.action == "skip" and "1 of the last 3 windows violate; 2 needed" in first.reason
    assert first.ledger.violations == (current - 2,)
    second = decide(alert(window=current - 1), "e2", first.ledger, policy, W, NOW)
    assert second.action == "start" and second.reason == "2 of the last 3 windows violate"
    # An alert about an older window than the latest violation does not act.
    stale = decide(alert(window=current - 2), "e3", second.ledger.model_copy(
        update={"pending": None, "last_started_at": None}), policy, W, NOW)
    assert stale.action == "skip" and "not the latest" in stale.reason


def test_k_of_n_needs_the_windows_to_be_recent():
    policy = RetrainingPolicy(k=2, n=3, cooldown_seconds=0)
    current = int(NOW // W)
    old = ledger(violations=(current - 10,))
    decision = decide(alert(window=current - 1), "e", old, policy, W, NOW)
    assert decision.action == "skip" and "1 of the last 3" in decision.reason
    too_old = decide(alert(window=current - 5), "e", ledger(), policy, W, NOW)
    assert "older than the last 3 windows" in too_old.reason


def test_external_alerts_count_the_window_they_arrive_in():
    policy = RetrainingPolicy(k=2, n=2, cooldown_seconds=0)
    first = decide(alert(), "e1", ledger(), policy, W, NOW)
    same_window = decide(alert(), "e2", first.ledger, policy, W, NOW + 60)
    assert same_window.action == "skip"  # a storm inside one window is one window
    next_window = decide(alert(), "e3", same_window.ledger, policy, W, NOW + W)
    assert next_window.action == "start"


def test_policy_sections_validate():
    with pytest.raises(ValueError, match="k \\(3\\) must not exceed n"):
        RetrainingPolicy(k=3, n=2)
    policy = RetrainingPolicy(
        entrypoint="python -m shared.monitoring.local_training --model {model}")
    assert policy.command("fraud")[-2:] == ["--model", "fraud"]
    assert MonitoringPolicy().retraining_window() == 300.0


# ---- rollback ----------------------------------------------------------------------------------

def canary(challenger="3", phase=Phase.CANARY) -> EndpointRecord:
    rollout = new_rollout("fraud", "fraud-prod", challenger, "2", phase, NOW)
    rollout = rollout.model_copy(update={"routes": {"2": 75, challenger: 25}, "step_index": 1})
    return EndpointRecord(endpoint="fraud-prod", model_name="fraud", champion="2", active=rollout)


def test_an_alert_on_the_canarys_challenger_requests_a_rollback():
    request = rollback_for(alert(kind=AlertKind.LATENCY, severity="error"), canary(),
                           RollbackOnAlertPolicy())
    assert (request.model_name, request.version, request.endpoint) == ("fraud", "3", "fraud-prod")
    assert request.decision.actor == "gatehouse:monitor"
    assert "challenger v3" in request.decision.reason
    assert "25% of traffic" in request.decision.reason
    assert request.decision.metrics == {"feature_psi": 0.3}


@pytest.mark.parametrize("change", [
    {"version": "2"},                          # the champion, not the challenger
    {"status": "resolved"},
    {"kind": AlertKind.FEATURE_DRIFT},         # input drift is not the challenger's fault
    {"severity": "info"},
    {"endpoint": None},
])
def test_alerts_that_do_not_implicate_the_challenger(change):
    kind = change.pop("kind", AlertKind.ERROR_RATE)
    assert rollback_for(alert(kind=kind, **change), canary(), RollbackOnAlertPolicy()) is None


def test_no_active_canary_no_rollback():
    assert rollback_for(alert(kind=AlertKind.ERROR_RATE), None, RollbackOnAlertPolicy()) is None
    finished = canary(phase=Phase.ROLLING_BACK)
    assert rollback_for(alert(kind=AlertKind.ERROR_RATE), finished, RollbackOnAlertPolicy()) is None
    off = RollbackOnAlertPolicy(enabled=False)
    assert rollback_for(alert(kind=AlertKind.ERROR_RATE), canary(), off) is None
