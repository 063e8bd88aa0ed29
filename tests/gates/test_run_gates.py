"""The run-gates handler against a real MLflow server (SQLite, artifacts on moto's S3) and real
Azure Storage queues and tables (Azurite), called in-process with queue messages and HTTP
requests as the Functions host would.

The handler's storage is a private Azurite for this module: the session's one may have the local
Functions host attached (other suites start it), whose router would take the GatesPassed /
GatesFailed events off `gatehouse-events` before this test could look at them.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import azure.functions as func
import numpy as np
import pandas as pd
import pytest

from functions import run_gates
from shared.dev import devstack
from shared.events import (
    Envelope,
    GatesFailed,
    GatesPassed,
    ModelVersionCreated,
    ModelVersionTagSet,
)
from shared.foundation import runtime
from shared.foundation.bus import Bus
from shared.foundation.idempotency import COMPLETED, IdempotencyStore
from shared.foundation.queues import GATEHOUSE_EVENTS, RUN_GATES
from shared.foundation.storage import Azurite
from shared.gates.request import RERUN_TAG

pytestmark = [
    pytest.mark.e2e,
    # mlflow's own notes while logging the test models
    pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column"),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]

LINEAGE = {"dataset_version": "2026-11-01", "feature_store_table": "fs.transactions",
           "team": "risk"}


def make_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.normal(size=n), "age": rng.normal(size=n)})
    truth = 1 / (1 + np.exp(-(1.5 * frame.amount - 1.0 * frame.age)))
    frame["label"] = (rng.random(n) < truth).astype(int)
    return frame


@pytest.fixture(scope="module")
def gate_storage(tmp_path_factory):
    emulator = Azurite(str(tmp_path_factory.mktemp("gates-azurite")), in_memory=True).start()
    yield emulator.connection_string
    emulator.stop()


@pytest.fixture(scope="module")
def world(mlflow_server, moto_s3, gate_storage, tmp_path_factory):
    """Environment, evaluation data and policy file for one model name."""
    folder: Path = tmp_path_factory.mktemp("gates")
    model = f"fraud-{uuid.uuid4().hex[:8]}"
    make_rows(40_000, seed=1).to_parquet(folder / "holdout.parquet")
    make_rows(20_000, seed=2).drop(columns="label").to_parquet(folder / "reference.parquet")
    policy = folder / "policy.toml"
    policy.write_text(f"""
[defaults.gates]
experiment = "gatehouse-gates-tests"
n_bootstrap = 100

[models."{model}".gates]
first_version_becomes_champion = true

[models."{model}".gates.evaluation]
path = "{folder / 'holdout.parquet'}"
reference_path = "{folder / 'reference.parquet'}"

[models."{model}".gates.latency]
blocking = false  # measured and reported; a loaded test machine must not decide the verdict
warmup_requests = 2
requests = 20
""")
    from shared.policy import current_policy

    with pytest.MonkeyPatch.context() as patch:
        for key, value in devstack.mlflow_client_env(moto_s3.url).items():
            patch.setenv(key, value)
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        patch.setenv("GATEHOUSE_POLICY_PATH", str(policy))
        patch.setenv("AzureWebJobsStorage", gate_storage)
        current_policy.cache_clear()
        runtime.reset()
        import mlflow

        mlflow.set_tracking_uri(mlflow_server.url)
        yield {"model": model, "url": mlflow_server.url, "storage": gate_storage}
        current_policy.cache_clear()
        runtime.reset()


def register(world, *, scale: float = 1.0, drop_age: bool = False, rename_age: bool = False,
             tags: dict | None = None) -> str:
    """Train and register one version; returns its version number."""
    import mlflow
    from sklearn.linear_model import LogisticRegression

    train = make_rows(20_000, seed=3)
    features = train[["amount", "age"]].copy()
    if drop_age:  # a weaker model: it never sees `age`
        features["age"] = 0.0
    if rename_age:  # an incompatible one: `age` became `age_years`
        features = features.rename(columns={"age": "age_years"})
    model = LogisticRegression().fit(features, train.label)
    model.coef_ *= scale  # scale > 1: the same ranking, over-confident probabilities
    model.intercept_ *= scale
    with mlflow.start_run():
        mlflow.set_tags(LINEAGE if tags is None else tags)
        info = mlflow.sklearn.log_model(model, name="model", input_example=features.head(5),
                                        registered_model_name=world["model"],
                                        pyfunc_predict_fn="predict_proba",
                                        pip_requirements=["scikit-learn"])
    return str(info.registered_model_version)


def outcomes(event: Envelope) -> list[tuple]:
    return [(g.name, g.status, g.detail) for g in event.data.gates]


def deliver(envelope: Envelope) -> None:
    run_gates.run_gates(func.QueueMessage(id=uuid.uuid4().hex, body=envelope.to_json().encode()))


def created(world, version: str) -> Envelope:
    return Envelope.wrap(ModelVersionCreated(model_name=world["model"], version=version),
                         source="/tests/registry")


def published(world, version: str) -> list[Envelope]:
    return [e for e in Bus(world["storage"]).peek(GATEHOUSE_EVENTS)
            if getattr(e.data, "model_name", None) == world["model"]
            and getattr(e.data, "version", None) == version]


def report_runs(world, version: str):
    from mlflow import MlflowClient

    client = MlflowClient(world["url"])
    experiment = client.get_experiment_by_name("gatehouse-gates-tests")
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`gatehouse.model` = '{world['model']}' and "
                                            f"tags.`gatehouse.version` = '{version}'")


def version_of(world, version: str):
    from mlflow import MlflowClient

    return MlflowClient(world["url"]).get_model_version(world["model"], version)


def alias(world, name: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(world["url"]).get_model_version_by_alias(world["model"], name).version
    except MlflowException:
        return None


def artifacts(world, run_id: str) -> set[str]:
    from mlflow import MlflowClient

    return {a.path for a in MlflowClient(world["url"]).list_artifacts(run_id)}


def test_gating_a_model_from_its_first_version_to_refusals(world):
    # v1 ignores `age`: calibrated but weak. No champion yet: judged on the absolute gates, and
    # the policy lets a first version that passes become the champion.
    first = register(world, drop_age=True)
    deliver(created(world, first))
    [event] = published(world, first)
    assert alias(world, "champion") == first, outcomes(event)
    assert alias(world, "challenger") == first
    assert isinstance(event.data, GatesPassed)
    assert "no champion yet" in event.data.decision.reason
    comparison = next(g for g in event.data.gates if g.name == "comparison")
    assert comparison.status == "skipped"

    # v2 sees both features: well calibrated and better than the champion -> @challenger.
    good = register(world)
    envelope = created(world, good)
    deliver(envelope)
    [event] = published(world, good)
    assert alias(world, "challenger") == good, outcomes(event)
    assert alias(world, "champion") == first
    assert isinstance(event.data, GatesPassed) and event.data.decision.actor == "gatehouse"
    assert event.data.decision.metrics["auc"] > event.data.decision.metrics["champion_auc"]
    statuses = {g.name: g.status for g in event.data.gates}
    assert statuses["ece"] == "pass" and statuses["comparison"] == "pass"
    assert statuses["schema"] == "pass" and statuses["lineage"] == "pass"
    latency = next(g for g in event.data.gates if g.name == "latency")
    assert latency.status in ("pass", "fail") and latency.observed > 0 and not latency.blocking
    [run] = report_runs(world, good)
    assert {"report.json", "report.md", "reliability.png"} <= artifacts(world, run.info.run_id)
    assert run.data.params["gates.ece.threshold"] == "0.02"
    assert run.data.metrics["ece"] < 0.02
    tags = version_of(world, good).tags
    assert tags["gatehouse.gates.verdict"] == "passed"
    assert tags["gatehouse.gates.report_run_id"] == run.info.run_id
    assert tags["gatehouse.gates.report_url"].endswith(f"/runs/{run.info.run_id}")
    assert tags["gatehouse.gates.decided_by"] == "gatehouse"
    assert tags["gatehouse.gates.champion_version"] == first
    assert json.loads(tags["gatehouse.gates.metrics"])["ece"] < 0.02

    # The same delivery again: the suite does not run twice.
    deliver(envelope)
    deliver(created(world, good))  # another event id for the same version: still once
    assert len(report_runs(world, good)) == 1
    assert len(published(world, good)) == 1
    store = IdempotencyStore.connect(world["storage"])
    assert store.status(run_gates.SCOPE, f"{world['model']}/{good}") == COMPLETED

    # v3: the same ranking, over-confident probabilities -> refused by the ECE gate, with the
    # reliability diagram logged for people to look at.
    over = register(world, scale=3.0)
    deliver(created(world, over))
    assert alias(world, "challenger") == good
    [event] = published(world, over)
    assert isinstance(event.data, GatesFailed)
    ece = next(g for g in event.data.gates if g.name == "ece")
    assert ece.status == "fail" and ece.blocking and ece.observed > 0.02
    assert "ece fail" in event.data.decision.reason
    [run] = report_runs(world, over)
    assert "reliability.png" in artifacts(world, run.info.run_id)
    assert version_of(world, over).tags["gatehouse.gates.verdict"] == "failed"
    from mlflow import MlflowClient

    png = MlflowClient(world["url"]).download_artifacts(run.info.run_id, "reliability.png")
    assert Path(png).read_bytes().startswith(b"\x89PNG")
    report = json.loads(Path(MlflowClient(world["url"]).download_artifacts(
        run.info.run_id, "report.json")).read_text())
    assert report["verdict"] == "failed" and "ece" in report["blocking"]
    assert report["reliability"]["champion"] is not None

    # v4: `age` renamed -> an incompatible signature, refused by the schema gate.
    renamed = register(world, rename_age=True)
    deliver(created(world, renamed))
    [event] = published(world, renamed)
    assert isinstance(event.data, GatesFailed)
    schema = next(g for g in event.data.gates if g.name == "schema")
    assert schema.status == "fail"
    assert "input 'age' removed" in schema.detail
    assert "new required input 'age_years'" in schema.detail
    assert alias(world, "challenger") == good


def http_request(model: str, version: str, body: bytes = b"") -> func.HttpRequest:
    return func.HttpRequest(method="POST", url=f"/api/gates/{model}/{version}/run",
                            route_params={"model": model, "version": version}, body=body)


def test_rerun_over_http_runs_the_suite_again_once(world):
    version = register(world)
    deliver(created(world, version))
    assert len(report_runs(world, version)) == 1

    body = json.dumps({"rerun_id": "after-holdout-fix", "requested_by": "ana",
                       "reason": "new holdout"}).encode()
    reply = run_gates.request_rerun(http_request(world["model"], version, body))
    assert reply.status_code == 202, reply.get_body()
    answer = json.loads(reply.get_body())
    again = run_gates.request_rerun(http_request(world["model"], version, body))
    assert json.loads(again.get_body())["event_id"] == answer["event_id"]  # same request

    bus = Bus(world["storage"])
    queued = [e for e in bus.peek(RUN_GATES) if e.id == answer["event_id"]]
    assert queued and isinstance(queued[0].data, ModelVersionTagSet)
    assert queued[0].data.tags[RERUN_TAG] == "after-holdout-fix"
    deliver(queued[0])
    deliver(queued[0])  # redelivered: once
    runs = report_runs(world, version)
    assert len(runs) == 2
    tags = version_of(world, version).tags
    assert "re-run requested by ana" in tags["gatehouse.gates.reason"]

    # a tag event that is not a re-run request is ignored
    deliver(Envelope.wrap(ModelVersionTagSet(model_name=world["model"], version=version,
                                             tags={"gatehouse.gates.verdict": "passed"}),
                          source="/tests"))
    assert len(report_runs(world, version)) == 2


@pytest.mark.parametrize("model,version,body,status,message", [
    ("m", "one", b"", 400, "a version number from 1"),
    ("m", "0", b"", 400, "a version number from 1"),
    ("m", "1" * 30, b"", 400, "a version number from 1"),
    ("m" * 501, "1", b"", 400, "at most 500 characters"),
    ("m", "1", b"not json", 400, "body is not valid JSON"),
    ("m", "1", b"[1]", 400, "JSON object"),
    ("m", "1", b'{"rerun_id": "a b"}', 400, "rerun_id"),
    ("m", "1", b'{"colour": "red"}', 400, "colour: Extra inputs are not permitted"),
])
def test_rerun_requests_with_bad_input_get_400(world, model, version, body, status, message):
    reply = run_gates.request_rerun(http_request(model, version, body))
    assert reply.status_code == status
    assert message in json.loads(reply.get_body())["error"]


def test_rerun_of_an_unknown_version_gets_404(world):
    reply = run_gates.request_rerun(http_request(world["model"], "999"))
    assert reply.status_code == 404
    assert "no version 999" in json.loads(reply.get_body())["error"]
    missing = run_gates.request_rerun(http_request(f"nobody-{uuid.uuid4().hex[:6]}", "1"))
    assert missing.status_code == 404


@pytest.mark.parametrize("point", ["gates.report_run_created", "gates.report_logged",
                                   "gates.published"])
def test_a_run_killed_after_a_side_effect_and_redelivered_does_it_once(world, point,
                                                                      monkeypatch):
    """The handler fails at the failpoint (its claim is released, as after a crash once the
    lease runs out), and the queue delivers the same message again."""
    from mlflow import MlflowClient

    from shared.foundation.failpoints import ENVIRONMENT, FailpointError

    version = register(world)
    deliver(created(world, version))
    tag_writes: list[tuple[str, str]] = []
    real_set_tag = MlflowClient.set_model_version_tag

    def counting_set_tag(client, name, version_, key, value):
        tag_writes.append((str(version_), key))
        return real_set_tag(client, name, version_, key, value)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", counting_set_tag)
    rerun = Envelope.wrap(ModelVersionTagSet(model_name=world["model"], version=version,
                                             tags={RERUN_TAG: f"redo-{point}"}),
                          source="/tests")
    monkeypatch.setenv(ENVIRONMENT, f"{point}=raise")
    with pytest.raises(FailpointError):
        deliver(rerun)
    monkeypatch.delenv(ENVIRONMENT)
    deliver(rerun)

    key = f"{world['model']}/{version}/rerun/redo-{point}"
    runs = [r for r in report_runs(world, version) if r.data.tags["gatehouse.run_key"] == key]
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert len(tag_writes) == len(set(tag_writes)), "a tag was written twice"
    assert version_of(world, version).tags["gatehouse.gates.report_run_id"] == runs[0].info.run_id
    announcements = [e for e in published(world, version)
                     if e.data.report_run_id == runs[0].info.run_id]
    assert len({e.id for e in announcements}) == 1  # a second copy has the same id
    store = IdempotencyStore.connect(world["storage"])
    assert store.status(run_gates.SCOPE, key) == COMPLETED


def test_a_200_kb_webhook_travels_by_claim_check_and_is_gated_once(world):
    """A signed MLflow `model_version.created` far over the queue limit (a long description,
    many tags): through the real receiver onto Azurite, retried by its sender, through the router
    to run-gates' queue, and gated once."""
    from datetime import UTC, datetime

    from functions import router
    from shared.foundation import claims
    from shared.foundation.queues import REGISTRY_EVENTS
    from shared.foundation.settings import Settings
    from shared.foundation.storage import decode_queue_message
    from shared.intake import receiver
    from shared.intake.signatures import mlflow_signature

    version = register(world)
    description = "A long model card. " * 8_000
    tags = {f"card.section.{n}": "y" * 60 for n in range(800)}
    body = json.dumps({"entity": "model_version", "action": "created",
                       "timestamp": datetime.now(UTC).isoformat(),
                       "data": {"name": world["model"], "version": version, "source": "models:/x",
                                "run_id": None, "tags": tags, "description": description}}).encode()
    assert len(body) > 200_000
    secret, delivery, stamp = "claim-check-secret", str(uuid.uuid4()), str(int(time.time()))
    headers = {"Content-Type": "application/json", "X-MLflow-Delivery-Id": delivery,
               "X-MLflow-Timestamp": stamp,
               "X-MLflow-Signature": mlflow_signature(secret, delivery, stamp, body)}
    bus = Bus(world["storage"])
    settings = Settings(mlflow_webhook_secret=secret)
    first = receiver.receive("mlflow", headers, body, settings, queue=bus)
    retry = receiver.receive("mlflow", headers, body, settings, queue=bus)  # the sender retried
    assert (first.status, retry.status) == (202, 202)
    event_id = first.body["event_id"]

    def take(queue: str) -> list[bytes]:
        client, mine = bus._queue(queue), []
        while batch := list(client.receive_messages(max_messages=32)):
            for message in batch:
                raw = decode_queue_message(message.content, bus.encoding)
                if Envelope.from_json(bus.open(raw)).id == event_id:
                    mine.append(raw)
                client.delete_message(message)
        return mine

    inbound = take(REGISTRY_EVENTS)
    assert len(inbound) == 2 and all(claims.reference_in(raw) for raw in inbound)
    for raw in inbound:
        router.route(raw, REGISTRY_EVENTS)
    [gate_message] = take(RUN_GATES)  # the retry was dropped by the router
    assert claims.reference_in(gate_message) is not None and len(gate_message) < 1024
    run_gates.handle(gate_message)
    run_gates.handle(gate_message)  # redelivered: gated once
    assert len(report_runs(world, version)) == 1
    [event] = published(world, version)
    assert isinstance(event.data, (GatesPassed, GatesFailed))
