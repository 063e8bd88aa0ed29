"""The monitoring stores (retraining ledgers, open alerts, references) on a MemoryTable; the
handler tests run them on Azurite."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shared.alerts.store import OpenAlerts
from shared.events import AlertKind, Envelope, MonitoringAlert
from shared.foundation.state import MemoryTable
from shared.monitoring.policy import MonitoringPolicy, RetrainingPolicy
from shared.monitoring.reactions import LEDGER_PARTITION, Launcher, LedgerStore, Reactions
from shared.monitoring.reference import ReferenceStore, reference_from_frame


class Runner:
    def __init__(self):
        self.started: list[str] = []
        self.lock = threading.Lock()

    def start(self, start) -> str:
        with self.lock:
            self.started.append(start.token)
            return f"run-{len(self.started)}"

    def active(self, run_ids):
        return set(run_ids)


def alert_envelope(n: int) -> Envelope:
    alert = MonitoringAlert(alert_kind=AlertKind.FEATURE_DRIFT, source="alertmanager",
                            model_name="fraud", version="3", endpoint="fraud-prod",
                            severity="warning", title=f"drift #{n}", figures={"value": 0.3},
                            fingerprint=f"alertmanager:{n}")
    return Envelope.wrap(alert, source="/gatehouse/alerts/alertmanager")


def test_an_alert_storm_on_one_ledger_starts_one_run():
    runner, published = Runner(), []
    policy = MonitoringPolicy(retraining=RetrainingPolicy(entrypoint="train {model}"))
    reactions = Reactions(ledgers=LedgerStore(MemoryTable()), publish=published.append,
                          policy_for=lambda model: policy, rollout_record=lambda endpoint: None,
                          launcher=lambda model, p: Launcher(runner, runner.start))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(reactions.react, [alert_envelope(n) for n in range(40)]))
    assert [r["retraining"]["action"] for r in results].count("start") == 1
    assert len(runner.started) == 1 and len(published) == 1
    ledger, _ = reactions.ledgers.load("fraud")
    assert [run.run_id for run in ledger.runs] == ["run-1"] and ledger.pending is None


def test_a_ledger_change_that_changes_nothing_writes_nothing():
    table = MemoryTable()
    ledgers = LedgerStore(table)
    ledgers.update("fraud", lambda ledger: ledger)
    assert table.rows(LEDGER_PARTITION) == []
    ledgers.update("fraud", lambda ledger: ledger.model_copy(update={"last_started_at": 1.0}))
    [before] = table.rows(LEDGER_PARTITION)
    ledgers.update("fraud", lambda ledger: ledger)
    assert table.rows(LEDGER_PARTITION) == [before]


def test_the_last_alert_state_written_stands():
    alerts = OpenAlerts(MemoryTable())
    alerts.put("fp", "open", "t0", "e1", {"model_name": "fraud", "endpoint": None})
    alerts.put("fp", "closed", "t0", "e2")
    record = alerts.get("fp")
    assert (record.state, record.event_id, record.is_open) == ("closed", "e2", False)
    assert alerts.open_alerts() == []


def test_a_reference_is_saved_in_parts_and_loaded_whole():
    rng = np.random.default_rng(0)
    features = {"amount": rng.normal(size=500), "country": rng.choice(["fr", "de"], 500)}
    reference = reference_from_frame("fraud", "3", features, scores=rng.random(500),
                                     labels=rng.integers(0, 2, 500), now=1.0)
    store = ReferenceStore(MemoryTable())
    store.save(reference)
    store.save(reference)  # saving again replaces
    assert store.load("fraud", "3") == reference
    assert store.load("fraud", "4") is None
