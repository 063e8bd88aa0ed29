"""A platform engineer's first hour, as README's "Connect to your MLflow" recipe says: a separately
started `mlflow server`, `gatehouse policy check`, `gatehouse up`, a registered model version
gets its verdict, report and (the first one) its deployment, and `gatehouse status` shows it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from shared.dev import demo_models, devstack
from shared.foundation.storage import PROJECT_ROOT, free_port
from shared.ops import localstate, up

pytestmark = pytest.mark.e2e

GATEHOUSE = str(Path(sys.executable).parent / "gatehouse")
README_MLFLOW = "http://127.0.0.1:5000"
README_PORT = "7071"
# The recipe's commands, as README writes them (its MLflow address and port are substituted).
RECIPE = ["gatehouse policy check policy.toml",
          f"gatehouse up --tracking-uri {README_MLFLOW} --policy policy.toml --port {README_PORT}",
          "gatehouse status"]
MODEL = "first-hour-fraud"
POLICY = """
[defaults.gates]
first_version_becomes_champion = true
n_bootstrap = 100

[defaults.gates.evaluation]
path = "holdout.parquet"

[defaults.gates.ece]
n_bins = 10
binning = "equal_mass"

[defaults.gates.latency]
enabled = false

[defaults.rollout]
replay_sample_size = 0
"""


def recipe_block() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    found = re.search(r"<!-- recipe:connect:begin -->(.*?)<!-- recipe:connect:end -->", text,
                      re.S)
    assert found, "README has no 'Connect to your MLflow' recipe block"
    return found.group(1)


def test_readme_recipe_is_what_the_test_runs():
    lines = {line.split("#")[0].strip() for line in recipe_block().splitlines()}
    assert set(RECIPE) <= lines
    assert "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true" in recipe_block()


def gatehouse(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([GATEHOUSE, *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=clean_env())


def clean_env() -> dict[str, str]:
    """A person's shell: no Gatehouse settings; the worktree's code first on the path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEHOUSE_", "AzureWebJobs", "MLFLOW_"))}
    return {**env, **devstack.NO_TELEMETRY, "PYTHONPATH": str(PROJECT_ROOT)}


def command(line: str, mlflow_url: str, port: int) -> list[str]:
    words = line.replace(README_MLFLOW, mlflow_url).replace(README_PORT, str(port)).split()
    assert words[0] == "gatehouse"
    return words[1:]


@pytest.fixture
def workdir(tmp_path):
    demo_models.generate(20_000, seed=11).to_parquet(tmp_path / "holdout.parquet")
    (tmp_path / "policy.toml").write_text(POLICY)
    return tmp_path


@pytest.fixture
def gatehouse_up(workdir, mlflow_server):
    port = free_port()
    process = subprocess.Popen([GATEHOUSE, *command(RECIPE[1], mlflow_server.url, port)],
                               cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=clean_env(), start_new_session=True)
    printed: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            printed.append(line)
            if line.startswith(up.READY_LINE):
                break
        printed += [process.stdout.readline() for _ in range(9)]
        assert any(line.startswith(up.READY_LINE) for line in printed), "".join(printed)
        yield {"port": port, "printed": "".join(printed), "process": process}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        assert gatehouse(workdir, "down").returncode == 0


def register_first_version(mlflow_url: str, moto_url: str) -> str:
    import mlflow

    with pytest.MonkeyPatch.context() as patch:
        for key, value in devstack.mlflow_client_env(moto_url).items():
            patch.setenv(key, value)
        mlflow.set_tracking_uri(mlflow_url)
        mlflow.set_experiment("first-hour")
        return demo_models.log_and_register(demo_models.train("basic", seed=1), MODEL, "v1")


def test_connect_to_your_mlflow(workdir, mlflow_server, moto_s3, gatehouse_up):
    from mlflow import MlflowClient

    checked = gatehouse(workdir, *command(RECIPE[0], mlflow_server.url, 0))
    assert checked.returncode == 0 and "valid" in checked.stdout, checked.stderr
    printed = gatehouse_up["printed"]
    for part in ("app ", "Azurite", "webhook", "test delivery ok", "serving", "policy.toml"):
        assert part in printed, printed
    state = localstate.load(workdir)
    assert localstate.running_azurite(state) and state["app"]["url"].endswith(
        str(gatehouse_up["port"]))

    version = register_first_version(mlflow_server.url, moto_s3.url)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    tags = devstack.wait_for("the gate verdict", lambda: (
        lambda t: t if t.get("gatehouse.gates.decided_at") else None)(
        client.get_model_version(MODEL, version).tags), timeout=240, interval=1)
    assert tags["gatehouse.gates.verdict"] == "passed", tags.get("gatehouse.gates.reason")
    report = client.list_artifacts(tags["gatehouse.gates.report_run_id"])
    assert {"report.json", "report.md"} <= {a.path for a in report}
    # The first version to pass is the champion and serves all traffic.
    assert devstack.wait_for("@champion", lambda: client.get_registered_model(MODEL).aliases.get(
        "champion"), timeout=60, interval=0.5) == version
    serving = state["serving"]["url"]
    devstack.wait_for("v1 to serve", lambda: requests.post(
        f"{serving}/serving-endpoints/{MODEL}/invocations", timeout=30,
        json={"dataframe_records": demo_models.generate(2, seed=3)[demo_models.FEATURES]
              .to_dict(orient="records")}).status_code == 200, timeout=120, interval=1)

    status = gatehouse(workdir, *command(RECIPE[2], mlflow_server.url, 0), "--json")
    assert status.returncode == 0, status.stderr
    found = json.loads(status.stdout)
    assert found["problems"] == {}
    [rollout] = [r for r in found["rollouts"] if r["model_name"] == MODEL]
    assert rollout["champion"] == version and rollout["last"]["phase"] == "promoted"
    assert [(t["action"], t["routes"]) for t in rollout["history"]] == [
        ("bootstrap", {version: 100})]
    assert any(v["model"] == MODEL and v["verdict"] == "passed" for v in found["verdicts"])

    table = gatehouse(workdir, "status").stdout
    assert re.search(rf"{MODEL}\s+v{version}\s+passed", table), table
    assert "ago" in table and "1796" not in table  # relative times, no epoch floats
