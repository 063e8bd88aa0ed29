"""The trigger-retraining handler on Azurite: an alert storm starts one run, a crashed start is
resumed with the same token, and an alert on a canary's challenger requests its rollback."""

from __future__ import annotations

import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.retraining import handle
from shared.events import (
    AlertKind,
    Envelope,
    MonitoringAlert,
    RetrainingTriggered,
    RollbackRequested,
)
from shared.foundation.bus import Bus
from shared.foundation.settings import Settings
from shared.monitoring.policy import MonitoringPolicy, RetrainingPolicy
from shared.monitoring.reactions import Launcher, LedgerStore, Reactions, launcher_for
from shared.monitoring.runners import LocalRunner, RunnerError
from shared.rollout.machine import EndpointRecord, Phase, new_rollout
from shared.rollout.store import Loaded, RolloutStore

QUICK_TRAINING = [sys.executable, "-c", "import time; time.sleep(0.2)"]


@pytest.fixture
def queue(storage_env) -> str:
    return f"events-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def runner(tmp_path) -> LocalRunner:
    return LocalRunner(tmp_path / "runs")


def policy(**retraining) -> MonitoringPolicy:
    settings = {"entrypoint": QUICK_TRAINING, "cooldown_seconds": 3600, **retraining}
    return MonitoringPolicy(retraining=RetrainingPolicy(**settings))


def reactions(storage, queue, runner, chosen: MonitoringPolicy, rollout_record=lambda e: None,
              launcher=None) -> Reactions:
    bus = Bus(storage)
    return Reactions(ledgers=LedgerStore.connect(storage),
                     publish=lambda envelope: bus.send(queue, envelope),
                     policy_for=lambda model: chosen, rollout_record=rollout_record,
                     launcher=launcher or (lambda model, p: launcher_for(
                         model, p, Settings.from_env({}), local_runner=runner)))


def alert_envelope(model: str, n: int, kind=AlertKind.FEATURE_DRIFT, version="3",
                   endpoint="fraud-prod", severity="warning") -> Envelope:
    alert = MonitoringAlert(alert_kind=kind, source="alertmanager", model_name=model,
                            version=version, endpoint=endpoint, severity=severity,
                            title=f"drift #{n}", figures={"value": 0.3 + n / 1000},
                            fingerprint=f"alertmanager:{uuid.uuid4().hex[:16]}")
    return Envelope.wrap(alert, source="/gatehouse/alerts/alertmanager")


def events_of(storage, queue, kind) -> list:
    return [e for e in Bus(storage).peek(queue) if isinstance(e.data, kind)]


def test_an_alert_storm_starts_one_run(storage_env, queue, runner):
    model = f"storm-{uuid.uuid4().hex[:8]}"
    shell = reactions(storage_env, queue, runner, policy())
    storm = [alert_envelope(model, n) for n in range(100)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda e: handle(e.to_json().encode(), shell), storm))
    started = [r for r in results if r["retraining"]["action"] == "start"]
    assert len(started) == 1
    assert {r["retraining"]["action"] for r in results} == {"start", "skip"}
    assert sorted(p.name for p in runner.runs_dir.glob("*.json")) == [
        f"{started[0]['retraining']['token']}.json"]
    [triggered] = events_of(storage_env, queue, RetrainingTriggered)
    assert triggered.data.model_name == model
    assert triggered.data.job_run_id == started[0]["retraining"]["run_id"]
    assert triggered.data.alert_fingerprint in {e.data.fingerprint for e in storm}
    assert triggered.data.decision.actor == "gatehouse:monitor"
    status = runner.wait(triggered.data.job_run_id, timeout=30)
    assert status["status"] == "succeeded" and status["parameters"]["model"] == model
    # Redelivered alerts are answered from the idempotency record: still one run.
    again = handle(storm[0].to_json().encode(), shell)
    assert again == results[0]
    assert len(list(runner.runs_dir.glob("*.json"))) == 1


def test_a_start_that_failed_is_resumed_with_the_same_token(storage_env, queue, runner):
    model = f"resume-{uuid.uuid4().hex[:8]}"
    attempts = []

    def flaky(model_name, chosen):
        real = launcher_for(model_name, chosen, Settings.from_env({}),
                            local_runner=runner)

        def start(pending):
            attempts.append(pending.token)
            if len(attempts) == 1:
                raise RunnerError("the first start fails")
            return real.start(pending)
        return Launcher(real.runner, start)

    shell = reactions(storage_env, queue, runner, policy(), launcher=flaky)
    envelope = alert_envelope(model, 0)
    with pytest.raises(RunnerError):
        handle(envelope.to_json().encode(), shell)
    # The queue redelivers: the decision taken (and saved) before the failure is resumed,
    # not refused by the cooldown it started.
    result = handle(envelope.to_json().encode(), shell)
    assert result["retraining"]["action"] == "resume"
    assert attempts[0] == attempts[1] == result["retraining"]["token"]
    assert len(events_of(storage_env, queue, RetrainingTriggered)) == 1
    # Another alert meanwhile is in the cooldown.
    other = handle(alert_envelope(model, 1).to_json().encode(), shell)
    assert other["retraining"]["action"] == "skip" and "cooldown" in other["retraining"]["reason"]


def test_no_runner_configured_takes_no_cooldown(storage_env, queue, runner):
    model = f"norunner-{uuid.uuid4().hex[:8]}"
    bare = MonitoringPolicy()
    shell = reactions(storage_env, queue, runner, bare)
    result = handle(alert_envelope(model, 0).to_json().encode(), shell)
    assert result["retraining"]["action"] == "skip"
    assert "no retraining job" in result["retraining"]["reason"]
    ledger, _ = LedgerStore.connect(storage_env).load(model)
    assert ledger.last_started_at is None


def test_an_alert_on_the_challenger_requests_a_rollback(storage_env, queue, runner):
    endpoint = f"ep-{uuid.uuid4().hex[:10]}"
    store = RolloutStore.connect(storage_env)
    rollout = new_rollout("fraud", endpoint, "3", "2", Phase.CANARY, time.time())
    rollout = rollout.model_copy(update={"routes": {"2": 95, "3": 5}, "step_index": 0})
    store.save(Loaded(None, None), EndpointRecord(endpoint=endpoint, model_name="fraud",
                                                  champion="2", active=rollout))
    shell = reactions(storage_env, queue, runner, policy(),
                      rollout_record=lambda name: store.load(name).record)
    envelope = alert_envelope("fraud", 0, kind=AlertKind.ERROR_RATE, endpoint=endpoint,
                              severity="error")
    result = handle(envelope.to_json().encode(), shell)
    assert result["rollback"]["requested"] is True
    assert result["retraining"]["action"] == "skip"  # error rate does not retrain
    [requested] = events_of(storage_env, queue, RollbackRequested)
    assert requested.id == result["rollback"]["event_id"]
    assert (requested.data.endpoint, requested.data.version) == (endpoint, "3")
    assert requested.data.decision.actor == "gatehouse:monitor"
    on_champion = alert_envelope("fraud", 1, kind=AlertKind.ERROR_RATE, endpoint=endpoint,
                                 version="2", severity="error")
    assert handle(on_champion.to_json().encode(), shell)["rollback"]["requested"] is False
    assert len(events_of(storage_env, queue, RollbackRequested)) == 1


def test_messages_that_are_not_alerts_are_refused(storage_env):
    from shared.events import ModelVersionCreated

    other = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="1"), source="/t")
    with pytest.raises(ValueError, match="not monitoring.alert"):
        handle(other.to_json().encode(), reactions=object())
