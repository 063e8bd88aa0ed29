"""GateService with in-memory adapters: the re-run request's answers, the champion rule, and a
run's effects when the evaluation data is missing (no MLflow server, no storage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, RESOURCE_DOES_NOT_EXIST

from shared.events import Envelope, GatesFailed, ModelVersionCreated
from shared.foundation.queues import RUN_GATES
from shared.gates.policy import GatePolicy
from shared.gates.request import RERUN_TAG, GateRequest, RerunBody
from shared.gates.service import GateService
from shared.registry.client import VersionInfo


class FakeRun:
    def __init__(self, run_id, tags):
        self.info = type("Info", (), {"run_id": run_id, "status": "RUNNING"})()
        self.data = type("Data", (), {"tags": dict(tags)})()
        self.texts: dict[str, str] = {}
        self.deleted = False


class FakeClient:
    """The few MlflowClient calls a report run makes, keeping runs as MLflow would."""

    def __init__(self):
        self.runs: list[FakeRun] = []

    def get_experiment_by_name(self, name):
        return type("Experiment", (), {"experiment_id": "7"})()

    def create_run(self, experiment, run_name, tags):
        run = FakeRun(f"run-{len(self.runs) + 1}", tags)
        self.runs.append(run)
        return run

    def search_runs(self, experiment_ids, filter_string, order_by=None, max_results=1000):
        digest = filter_string.rsplit("=", 1)[1].strip(" '")
        return [r for r in self.runs
                if not r.deleted and r.data.tags.get("gatehouse.run_digest") == digest]

    def log_batch(self, run_id, params=(), metrics=()):
        pass

    def log_text(self, run_id, text, name):
        self.run(run_id).texts[name] = text

    def log_artifact(self, run_id, path):
        pass

    def download_artifacts(self, run_id, path, dst_path):
        target = Path(dst_path) / path
        target.write_text(self.run(run_id).texts[path])
        return str(target)

    def set_terminated(self, run_id, status):
        self.run(run_id).info.status = status

    def delete_run(self, run_id):
        self.run(run_id).deleted = True

    def run(self, run_id) -> FakeRun:
        return next(r for r in self.runs if r.info.run_id == run_id)

    def live_runs(self) -> list[FakeRun]:
        return [r for r in self.runs if not r.deleted]


class FakeRegistry:
    """The registry adapter's contract: tags and aliases are written only when they differ."""

    tracking_uri = "http://mlflow.invalid"

    def __init__(self, versions=(), aliases=None, lookup_error=None):
        self.versions = {v: VersionInfo("fraud", v, None, None) for v in versions}
        self.aliases = dict(aliases or {})
        self.lookup_error = lookup_error
        self.tags, self.client = {}, FakeClient()
        self.tag_writes: list[tuple[str, str]] = []
        self.alias_writes: list[tuple[str, str]] = []

    def version(self, model, version):
        if self.lookup_error is not None:
            raise self.lookup_error
        if version not in self.versions:
            raise MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST)
        return self.versions[version]

    def version_by_alias(self, model, alias):
        version = self.aliases.get(alias)
        return self.versions[version] if version else None

    def signature(self, model, version):
        return None

    def run_tags(self, run_id):
        return {}

    def set_version_tags(self, model, version, tags):
        current = self.tags.setdefault(version, {})
        changed = {k: v for k, v in tags.items() if current.get(k) != v}
        current.update(changed)
        self.tag_writes.extend((version, key) for key in changed)
        return changed

    def set_alias(self, model, alias, version):
        if self.aliases.get(alias) == version:
            return False
        self.aliases[alias] = version
        self.alias_writes.append((alias, version))
        return True

    def delete_alias(self, model, alias):
        self.aliases.pop(alias, None)


class FakeBus:
    def __init__(self, fail=False):
        self.sent, self.published, self.fail = [], [], fail

    def send(self, queue, envelope):
        if self.fail:
            raise ConnectionError("storage down")
        self.sent.append((queue, envelope))

    def publish(self, envelope):
        self.published.append(envelope)


def service(registry, bus=None) -> GateService:
    return GateService(registry, bus or FakeBus(), lambda model: GatePolicy(),
                       clock=lambda: 1_800_000_000.0)


def test_a_rerun_of_a_known_version_is_enqueued_once_per_rerun_id():
    bus = FakeBus()
    gates = service(FakeRegistry(versions=["3"]), bus)
    reply = gates.request_rerun("fraud", "3", RerunBody(rerun_id="fix-1", requested_by="ana"))
    again = gates.request_rerun("fraud", "3", RerunBody(rerun_id="fix-1", requested_by="ana"))
    assert reply.status == 202 and reply.body["rerun_id"] == "fix-1"
    assert reply.body["queue"] == RUN_GATES
    assert again.body["event_id"] == reply.body["event_id"]
    [(queue, envelope), _] = bus.sent
    assert queue == RUN_GATES and envelope.id == reply.body["event_id"]
    assert envelope.data.tags[RERUN_TAG] == "fix-1" and envelope.data.actor == "ana"
    fresh = gates.request_rerun("fraud", "3", RerunBody())
    assert fresh.status == 202 and fresh.body["event_id"] != reply.body["event_id"]


def test_a_rerun_of_an_unknown_version_is_404_and_enqueues_nothing():
    bus = FakeBus()
    reply = service(FakeRegistry(versions=["3"]), bus).request_rerun("fraud", "9", RerunBody())
    assert reply.status == 404 and "no version 9 of model 'fraud'" in reply.body["error"]
    assert bus.sent == []


@pytest.mark.parametrize("error", [MlflowException("boom", error_code=INTERNAL_ERROR),
                                   ConnectionError("refused")])
def test_an_unreachable_registry_is_503_retry_in_30_seconds(error):
    reply = service(FakeRegistry(lookup_error=error)).request_rerun("fraud", "3", RerunBody())
    assert reply.status == 503 and reply.headers == {"Retry-After": "30"}
    assert reply.body["error"] == "the model registry cannot be reached"


def test_an_unreachable_queue_is_503_retry_in_10_seconds():
    reply = service(FakeRegistry(versions=["3"]), FakeBus(fail=True)).request_rerun(
        "fraud", "3", RerunBody())
    assert reply.status == 503 and reply.headers == {"Retry-After": "10"}


def test_the_champion_is_compared_unless_it_is_the_candidate_itself():
    registry = FakeRegistry(versions=["1", "2"], aliases={"champion": "1"})
    gates = service(registry)
    assert gates.evaluate("fraud", "2").report.champion_version == "1"
    rerun_of_champion = gates.evaluate("fraud", "1")
    assert rerun_of_champion.report.champion_version is None
    assert gates.evaluate("fraud", "5") is None


def test_evaluate_writes_nothing():
    registry = FakeRegistry(versions=["2"])
    bus = FakeBus()
    evaluation = service(registry, bus).evaluate("fraud", "2")
    assert evaluation.report.verdict == "failed"
    assert "no evaluation dataset configured" in evaluation.report.results[0].detail
    assert registry.tags == {} and registry.client.runs == [] and bus.published == []


def test_a_run_without_evaluation_data_is_refused_recorded_and_announced():
    registry = FakeRegistry(versions=["2"], aliases={"challenger": "2"})
    bus = FakeBus()
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="2"),
                             source="/tests")
    result = service(registry, bus).run(envelope, GateRequest("fraud", "2", "mlflow"))
    assert result == {"verdict": "failed", "report_run_id": "run-1", "aliases": [],
                      "blocking": ["evaluation", "lineage", "schema"]}  # no run, no signature
    tags = registry.tags["2"]
    assert tags["gatehouse.gates.verdict"] == "failed"
    assert tags["gatehouse.gates.report_url"] == "http://mlflow.invalid/#/experiments/7/runs/run-1"
    assert tags["gatehouse.gates.decided_at"] == "2027-01-15T08:00:00+00:00"
    assert "challenger" not in registry.aliases  # a re-run that fails loses @challenger
    [run] = registry.client.runs
    assert run.data.tags["gatehouse.event_id"] == envelope.id
    assert run.data.tags["gatehouse.run_key"] == "fraud/2" and run.info.status == "FINISHED"
    assert set(run.texts) == {"report.json", "report.md"}
    [announced] = bus.published
    assert isinstance(announced.data, GatesFailed) and announced.data.report_run_id == "run-1"
    assert announced.id == Envelope.wrap(announced.data, source="/gatehouse/run-gates",
                                         dedupe_key="gates|fraud/2").id


def test_a_run_on_a_deleted_version_does_nothing():
    registry, bus = FakeRegistry(), FakeBus()
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="4"),
                             source="/tests")
    result = service(registry, bus).run(envelope, GateRequest("fraud", "4", "mlflow"))
    assert result == {"verdict": None, "skipped": "the version no longer exists"}
    assert registry.tags == {} and bus.published == []


# ---- redoing a run after a crash at each of its side effects ----

GATE_FAILPOINTS = ["gates.report_run_created", "gates.reference_saved", "gates.report_logged",
                   "gates.tags_written", "gates.alias_set", "gates.published"]


@pytest.fixture
def passing_suite(monkeypatch):
    """The suite passes every version (the gates themselves are tested elsewhere); the
    monitoring references saved are kept by report run."""
    from shared.gates import service as service_module
    from shared.gates.inputs import SuiteInputs
    from shared.gates.results import GateResult
    from shared.gates.suite import SuiteReport

    def gather(registry, policy, model, version, candidate, champion):
        return SuiteInputs(model, version, champion_version=champion.version if champion else None)

    def suite(inputs, policy):
        return SuiteReport(inputs.model_name, inputs.version, inputs.champion_version, "passed",
                           [GateResult("ece", "pass", True, 0.01, 0.02, "calibrated")],
                           {"ece": 0.01})

    references: list[str] = []
    monkeypatch.setattr(service_module, "gather_inputs", gather)
    monkeypatch.setattr(service_module, "run_suite", suite)
    monkeypatch.setattr(GateService, "_save_monitoring_reference",
                        lambda self, inputs, run_id: references.append(run_id))
    return references


def gate_once(gates: GateService, store, envelope: Envelope, request: GateRequest):
    """What the run-gates handler does with one message: the run, once per request key."""
    from shared.foundation.handling import process_once

    return process_once(store, "run-gates", request.key, lambda: gates.run(envelope, request))


@pytest.mark.parametrize("point", GATE_FAILPOINTS)
def test_a_run_redone_after_a_crash_does_each_effect_once(point, passing_suite, monkeypatch):
    from shared.foundation.failpoints import ENVIRONMENT, FailpointError
    from shared.foundation.idempotency import IdempotencyStore
    from shared.foundation.state import MemoryTable

    registry = FakeRegistry(versions=["1", "2"], aliases={"champion": "1"})
    bus, store = FakeBus(), IdempotencyStore(MemoryTable())
    gates = service(registry, bus)
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="2"),
                             source="/tests")
    request = GateRequest("fraud", "2", "mlflow")
    monkeypatch.setenv(ENVIRONMENT, f"{point}=raise")
    with pytest.raises(FailpointError):
        gate_once(gates, store, envelope, request)
    monkeypatch.delenv(ENVIRONMENT)
    gates.clock = lambda: 1_800_000_900.0  # the redo comes later
    result = gate_once(gates, store, envelope, request)

    [run] = registry.client.live_runs()
    assert run.info.status == "FINISHED" and result["report_run_id"] == run.info.run_id
    assert passing_suite.count(run.info.run_id) == 1  # its monitoring reference, once
    assert len(registry.tag_writes) == len(set(registry.tag_writes))  # no tag written twice
    assert registry.tags["2"]["gatehouse.gates.report_run_id"] == run.info.run_id
    assert registry.alias_writes == [("challenger", "2")]
    assert {e.id for e in bus.published} == {Envelope.wrap(
        bus.published[0].data, source="/gatehouse/run-gates", dedupe_key="gates|fraud/2").id}
    assert all(e.data.report_run_id == run.info.run_id for e in bus.published)
    # The redo read the verdict and the decision time back from the finished run's report.
    if point not in ("gates.report_run_created", "gates.reference_saved"):
        assert registry.tags["2"]["gatehouse.gates.decided_at"] == "2027-01-15T08:00:00+00:00"


def test_an_unfinished_report_run_is_replaced_by_one_finished_run(passing_suite, monkeypatch):
    from shared.foundation.failpoints import ENVIRONMENT, FailpointError

    registry = FakeRegistry(versions=["1", "2"], aliases={"champion": "1"})
    gates = service(registry)
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="2"),
                             source="/tests")
    monkeypatch.setenv(ENVIRONMENT, "gates.reference_saved=raise")
    with pytest.raises(FailpointError):
        gates.run(envelope, GateRequest("fraud", "2", "mlflow"))
    [failed] = registry.client.runs
    assert failed.info.status == "FAILED" and not failed.deleted
    monkeypatch.delenv(ENVIRONMENT)
    gates.run(envelope, GateRequest("fraud", "2", "mlflow"))
    first, second = registry.client.runs
    assert first.deleted and not second.deleted and second.info.status == "FINISHED"


def test_an_old_version_that_passes_never_takes_challenger_from_a_newer_one(passing_suite):
    registry = FakeRegistry(versions=[str(v) for v in range(1, 9)],
                            aliases={"champion": "3", "challenger": "7"})
    bus = FakeBus()
    late = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="1"), source="/tests")
    result = service(registry, bus).run(late, GateRequest("fraud", "1", "mlflow"))
    assert result["verdict"] == "passed" and result["aliases"] == []
    assert registry.aliases == {"champion": "3", "challenger": "7"}
    assert registry.alias_writes == []
    tags = registry.tags["1"]
    assert tags["gatehouse.gates.verdict"] == "passed" and tags["gatehouse.gates.aliases"] == ""
    assert "v3 is @champion and newer than v1" in tags["gatehouse.gates.reason"]
    [announced] = bus.published
    assert "not made @challenger" in announced.data.decision.reason

    # v5 is newer than the champion but older than @challenger v7: it does not take it either.
    five = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="5"), source="/tests")
    service(registry, bus).run(five, GateRequest("fraud", "5", "mlflow"))
    assert registry.aliases["challenger"] == "7"
    assert "v7 is @challenger and newer than v5" in registry.tags["5"]["gatehouse.gates.reason"]


TABLE_POLICY = GatePolicy.model_validate({
    "evaluation": {"table": "main.gates.{model}_holdout"}, "lineage": {"enabled": False},
    "schema": {"enabled": False}, "conformal": {"enabled": False},
    "drift": {"enabled": False}, "latency": {"enabled": False}})


def test_a_holdout_table_without_spark_is_a_data_error():
    registry = FakeRegistry(versions=["2"])
    gates = GateService(registry, FakeBus(), lambda model: TABLE_POLICY)
    report = gates.evaluate("fraud", "2").report
    assert report.verdict == "failed"
    assert "a holdout table needs Spark" in report.results[0].detail


def test_a_holdout_table_is_summarised_once_per_request_key_and_judged():
    import numpy as np

    from shared.gates.summaries import HoldoutSummary, reliability_sums

    rng = np.random.default_rng(0)
    p = rng.random(30_000)
    table = reliability_sums(p, rng.random(30_000) < p, np.linspace(0, 1, 16))
    asked = []

    def summarise(request, key):  # an in-process engine: the numpy summary of the same kind
        asked.append((request.holdout, request.model_uri, key))
        return HoldoutSummary(rows=30_000, calibration={"positive": table})

    registry = FakeRegistry(versions=["2"])
    gates = GateService(registry, FakeBus(), lambda model: TABLE_POLICY, summarise=summarise)
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="2"),
                             source="/tests")
    gates.run(envelope, GateRequest("fraud", "2", "mlflow", rerun="r1"))
    assert asked == [("main.gates.fraud_holdout", "models:/fraud/2", "fraud/2/rerun/r1")]
    [run] = registry.client.runs
    ece = next(r for r in json.loads(run.texts["report.json"])["gates"] if r["name"] == "ece")
    assert ece["status"] == "pass" and ece["evidence"]["interval_method"] == "moments"
