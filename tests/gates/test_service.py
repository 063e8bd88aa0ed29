"""GateService with in-memory adapters: the re-run request's answers, the champion rule, and a
run's effects when the evaluation data is missing (no MLflow server, no storage)."""

from __future__ import annotations

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
    def __init__(self, run_id):
        self.info = type("Info", (), {"run_id": run_id})()


class FakeClient:
    """The few MlflowClient calls a report run makes."""

    def __init__(self):
        self.runs, self.texts, self.terminated = [], {}, []

    def get_experiment_by_name(self, name):
        return type("Experiment", (), {"experiment_id": "7"})()

    def create_run(self, experiment, run_name, tags):
        self.runs.append((experiment, run_name, tags))
        return FakeRun(f"run-{len(self.runs)}")

    def log_batch(self, run_id, params=(), metrics=()):
        pass

    def log_text(self, run_id, text, name):
        self.texts[name] = text

    def log_artifact(self, run_id, path):
        pass

    def set_terminated(self, run_id, status):
        self.terminated.append((run_id, status))


class FakeRegistry:
    tracking_uri = "http://mlflow.invalid"

    def __init__(self, versions=(), aliases=None, lookup_error=None):
        self.versions = {v: VersionInfo("fraud", v, None, None) for v in versions}
        self.aliases = dict(aliases or {})
        self.lookup_error = lookup_error
        self.tags, self.client = {}, FakeClient()

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
        self.tags.setdefault(version, {}).update(tags)

    def set_alias(self, model, alias, version):
        self.aliases[alias] = version

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
    assert registry.client.runs[0][2]["gatehouse.event_id"] == envelope.id
    assert set(registry.client.texts) == {"report.json", "report.md"}
    [announced] = bus.published
    assert isinstance(announced.data, GatesFailed) and announced.data.report_run_id == "run-1"
    assert announced.id == envelope.derived(announced.data, source="/gatehouse/run-gates").id


def test_a_run_on_a_deleted_version_does_nothing():
    registry, bus = FakeRegistry(), FakeBus()
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="4"),
                             source="/tests")
    result = service(registry, bus).run(envelope, GateRequest("fraud", "4", "mlflow"))
    assert result == {"verdict": None, "skipped": "the version no longer exists"}
    assert registry.tags == {} and bus.published == []
