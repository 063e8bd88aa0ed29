"""Model quality in the live rollout: the service reads both versions' answers from the embedded
server's payload log, compares them on the champion's monitoring reference and rolls back a
challenger whose predictions differ even when its errors and latency are fine. Records and
references on Azurite; real MLflow pyfunc models behind the embedded server (its own thread);
the registry and bus are in-memory stand-ins."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from shared.foundation.state import StateTable
from shared.monitoring.reference import ReferenceStore, reference_from_frame
from shared.rollout.machine import Phase
from shared.rollout.policy import RolloutPolicy
from shared.rollout.service import RolloutService
from shared.rollout.store import RolloutStore, RolloutTable
from shared.serving.embedded import serve
from shared.serving.embedded_client import EmbeddedServing
from tests.rollout.test_effects import Bus, Registry

MODEL = "fraud"
COLUMNS = ["f0", "f1", "f2"]
# Same SLAs for every version: the judge's latency and error checks see nothing to choose.
QUALITY = RolloutPolicy(steps=(50, 100), min_bake_seconds=0, min_requests_per_step=150,
                        warmup_seconds=0, max_warmup_seconds=0, max_p99_latency_ratio=3.0,
                        error_margin_absolute=0.2, latency_tail_share=0.5, max_extensions=0,
                        replay_sample_size=0, shadow_step=False)


def _frame(seed: int, rows: int = 400):
    import pandas as pd

    return pd.DataFrame(np.random.default_rng(seed).normal(size=(rows, 3)), columns=COLUMNS)


def _save_model(path, labels_from) -> str:
    """A logistic regression answering P(positive) per row (predict_proba)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame = _frame(0)
    model = LogisticRegression().fit(frame, labels_from(frame).astype(int))
    mlflow.sklearn.save_model(model, str(path), pyfunc_predict_fn="predict_proba",
                              signature=infer_signature(frame, model.predict_proba(frame)),
                              pip_requirements=["scikit-learn"],
                              serialization_format="cloudpickle")
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """v1 the champion, v2 the same model, v3 one that calls most requests positive."""
    import mlflow.pyfunc

    base = tmp_path_factory.mktemp("quality-models")
    paths = {"1": _save_model(base / "v1", lambda f: f["f0"] > 0),
             "2": _save_model(base / "v2", lambda f: f["f0"] > 0),
             "3": _save_model(base / "v3", lambda f: f["f0"] + f["f1"] > -1.6)}
    http, _ = serve(0, payload_log=tmp_path_factory.mktemp("quality-log") / "payloads.sqlite",
                    loader=lambda model, version: mlflow.pyfunc.load_model(paths[version]))
    yield f"http://127.0.0.1:{http.server_port}", paths
    http.shutdown()
    http.server_close()


class World:
    """An endpoint serving v1 on the embedded server, v1's reference on Azurite, the service."""

    def __init__(self, storage: str, server, policy: RolloutPolicy):
        import mlflow.pyfunc

        self.url, paths = server
        self.endpoint = f"q-{uuid.uuid4().hex[:10]}"
        self.serving = EmbeddedServing(self.url)
        self.serving.set_traffic(self.endpoint, MODEL, {"1": 100})
        self.registry = Registry(3, {"champion": "1"})
        self.bus = Bus()
        champion = mlflow.pyfunc.load_model(paths["1"])
        frame = _frame(1)
        scores = np.asarray(champion.predict(frame))[:, 1]
        references = ReferenceStore(StateTable(storage, f"qr{uuid.uuid4().hex[:12]}"))
        references.save(reference_from_frame(MODEL, "1", frame, scores=scores))
        self.service = RolloutService(
            RolloutStore(RolloutTable(storage, f"qx{uuid.uuid4().hex[:12]}")), self.serving,
            self.registry, self.bus, lambda model: policy.model_copy(
                update={"endpoint": self.endpoint}), references=references.load)

    def drive(self, count: int, seed: int) -> None:
        """`count` requests, the same ones (inputs and request ids, so routing) for one seed."""
        rows = _frame(seed, count).to_numpy().tolist()

        def one(numbered):
            index, row = numbered
            body = {"dataframe_split": {"columns": COLUMNS, "data": [row]}}
            reply = requests.post(f"{self.url}/serving-endpoints/{self.endpoint}/invocations",
                                  json=body, headers={"X-Request-Id": f"{seed}-{index}"},
                                  timeout=30)
            assert reply.status_code == 200, reply.text

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, enumerate(rows)))

    def history(self) -> list:
        return self.service.store.history(self.endpoint)


def canary_of(world: World, version: str) -> dict:
    """Start `version`, drive traffic at the first step, and take the look."""
    world.service.start(MODEL, version, actor="gates", reason="gates passed")
    world.service.tick(world.endpoint)       # the step's traffic applied
    world.drive(800, seed=int(version) + 10)
    return world.service.tick(world.endpoint)


def test_a_challenger_with_shifted_predictions_and_equal_slas_is_rolled_back(storage, server):
    world = World(storage, server, QUALITY)
    result = canary_of(world, "3")
    verdict = result["verdict"]
    assert verdict["action"] == "rollback", verdict
    assert "prediction PSI" in verdict["reason"] and "max_prediction_psi 0.2" in verdict["reason"]
    assert verdict["figures"]["prediction_psi"] > 0.2
    # Nothing else was against it: no e-value of errors or latency is significant.
    assert not any(test["significant"] for test in verdict["tests"])
    [requested] = [t for t in world.history() if t.action == "rollback_requested"]
    assert "prediction PSI" in requested.reason and requested.figures["prediction_psi"] > 0.2
    assert result["active"]["phase"] == Phase.ROLLING_BACK.value


def test_a_challenger_with_the_champions_predictions_is_not_rolled_back(storage, server):
    world = World(storage, server, QUALITY)
    verdict = canary_of(world, "2")["verdict"]
    assert verdict["action"] in ("promote", "advance"), verdict
    figures = verdict["figures"]
    # Two samples of one distribution (the canary splits the requests): PSI near 0.
    assert figures["prediction_psi"] < 0.1
    assert figures["challenger_predictions"] >= 150 and figures["champion_predictions"] >= 150
    # CBPE, the monitor's delayed-label proxy, shown for both versions.
    assert figures["challenger_cbpe_accuracy"] == pytest.approx(
        figures["champion_cbpe_accuracy"], abs=0.05)
    assert "rollback_requested" not in [t.action for t in world.history()]


# ---- the shadow step: mirrored live traffic, no user exposure ----

SHADOW = QUALITY.model_copy(update={"shadow_step": True, "min_shadow_requests": 200})


def shadow_of(world: World, version: str) -> dict:
    """Start `version` (its shadow step begins: mirroring on), drive live traffic, look."""
    started = world.service.start(MODEL, version, actor="gates", reason="gates passed")
    assert started["active"]["phase"] == Phase.SHADOW.value
    assert world.serving.state(world.endpoint).shadow == version
    assert world.registry.aliases["shadow"] == version
    world.drive(300, seed=int(version) + 20)
    return world.service.tick(world.endpoint)


def served_by(world: World, version: str) -> int:
    return sum(1 for r in world.serving.records(world.endpoint, 0, 10_000)
               if r.version == version and not r.shadow)


def test_a_challenger_unlike_the_champion_is_rolled_back_at_the_shadow_step(storage, server):
    world = World(storage, server, SHADOW)
    result = shadow_of(world, "3")
    verdict = result["verdict"]
    assert verdict["action"] == "rollback", verdict
    assert "shadow step" in verdict["reason"] and "prediction PSI" in verdict["reason"]
    assert "max_disagreement_rate 0.1" in verdict["reason"]
    assert verdict["figures"]["disagreement_lower"] > SHADOW.max_disagreement_rate
    assert verdict["figures"]["mirrored_requests"] >= 200
    assert served_by(world, "3") == 0            # no caller ever got v3's answer
    world.service.complete_rollback(world.endpoint, actor="gatehouse")
    assert world.serving.state(world.endpoint).shadow is None
    assert "shadow" not in world.registry.aliases
    assert [t.action for t in world.history()] == ["create", "shadow", "rollback_requested",
                                                   "rolled_back"]


def test_a_challenger_that_agrees_leaves_the_shadow_step_for_the_first_step(storage, server):
    from shared.ops.status_page import rollouts_html

    world = World(storage, server, SHADOW)
    world.service.start(MODEL, "2", actor="gates", reason="gates passed")
    page = rollouts_html([world.service.detail(world.endpoint)], now=world.service.clock())
    assert '<span class="shadow">shadow</span>, traffic v1 100%' in page
    assert "live requests mirrored to v2" in page and ">shadow<" in page
    world.drive(300, seed=22)
    verdict = world.service.tick(world.endpoint)["verdict"]
    assert verdict["action"] == "advance", verdict
    assert verdict["figures"]["prediction_disagreement"] == 0.0
    assert verdict["figures"]["prediction_psi"] < 0.01   # the same requests, the same answers
    state = world.serving.state(world.endpoint)
    assert state.routes == {"1": 50, "2": 50} and state.shadow is None
    assert "shadow" not in world.registry.aliases and world.registry.aliases["challenger"] == "2"
    [canary] = [t for t in world.history() if t.action == "canary"]
    assert canary.from_phase is Phase.SHADOW and "agrees with the champion" in canary.reason
    assert canary.figures["mirrored_requests"] >= 200
    assert [e.data.kind for e in world.bus.published] == ["rollout.canary_started"]
