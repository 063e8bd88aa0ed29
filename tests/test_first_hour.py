"""A platform engineer's first hour, as README's "Connect to your MLflow" recipe says: a separately
started `mlflow server`, `gatehouse policy check`, `gatehouse up`, a registered model version
gets its verdict, report and (the first one) its deployment, and `gatehouse status` shows it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from shared.dev import demo_models, devstack
from shared.foundation.storage import PROJECT_ROOT, free_port
from shared.ops import localstate, up

# Starts the app and a gate run from scratch: minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("first-hour")
    demo_models.generate(20_000, seed=11).to_parquet(folder / "holdout.parquet")
    (folder / "policy.toml").write_text(POLICY)
    return folder


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def first_version(workdir, mlflow_server, moto_s3, gatehouse_up):
    """v1 registered on the MLflow server; its gate verdict and @champion recorded."""
    import mlflow
    from mlflow import MlflowClient

    with pytest.MonkeyPatch.context() as patch:
        for key, value in devstack.mlflow_client_env(moto_s3.url).items():
            patch.setenv(key, value)
        mlflow.set_tracking_uri(mlflow_server.url)
        mlflow.set_experiment("first-hour")
        version = demo_models.log_and_register(demo_models.train("basic", seed=1), MODEL, "v1")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    tags = devstack.wait_for("the gate verdict", lambda: (
        lambda t: t if t.get("gatehouse.gates.decided_at") else None)(
        client.get_model_version(MODEL, version).tags), timeout=240, interval=1)
    return {"version": version, "tags": tags, "client": client}


def test_connect_to_your_mlflow(workdir, mlflow_server, gatehouse_up, first_version):
    checked = gatehouse(workdir, *command(RECIPE[0], mlflow_server.url, 0))
    assert checked.returncode == 0 and "valid" in checked.stdout, checked.stderr
    printed = gatehouse_up["printed"]
    for part in ("app ", "Azurite", "webhook", "test delivery ok", "serving", "policy.toml",
                 "/api/status?code="):
        assert part in printed, printed
    state = localstate.load(workdir)
    assert localstate.running_azurite(state) and state["app"]["url"].endswith(
        str(gatehouse_up["port"]))

    version, tags, client = (first_version[k] for k in ("version", "tags", "client"))
    assert tags["gatehouse.gates.verdict"] == "passed", tags.get("gatehouse.gates.reason")
    report = client.list_artifacts(tags["gatehouse.gates.report_run_id"])
    assert {"report.json", "report.md", "reliability.png"} <= {a.path for a in report}
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
    [verdict] = [v for v in found["verdicts"] if v["model"] == MODEL]
    assert verdict["verdict"] == "passed" and verdict["aliases"] == "champion"

    table = gatehouse(workdir, "status").stdout
    assert re.search(rf"{MODEL}\s+v{version}\s+passed", table), table
    assert "ago" in table and "1796" not in table  # relative times, no epoch floats


def test_the_status_page_in_a_headless_browser(workdir, gatehouse_up, first_version):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    state = localstate.load(workdir)
    devstack.wait_for("the rollout", lambda: '"bootstrap"' in gatehouse(
        workdir, "status", "--json").stdout, timeout=120, interval=1)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(
        shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        driver.get(f"{state['app']['url']}/api/status?code={state['function_key']}")
        assert driver.title == "Gatehouse status"
        version = first_version["version"]
        rollout = driver.find_element(By.CSS_SELECTOR, f'.rollout[data-endpoint="{MODEL}"]')
        assert "bootstrap" in rollout.text and f"v{version} 100%" in rollout.text
        assert rollout.find_elements(By.TAG_NAME, "svg")
        verdict = driver.find_element(
            By.CSS_SELECTOR, f'.verdict[data-model="{MODEL}"][data-version="{version}"]')
        assert verdict.find_element(By.CSS_SELECTOR, "h3 .passed").text == "passed"
        diagram = verdict.find_element(By.CSS_SELECTOR, "img.diagram")
        driver.execute_script("arguments[0].scrollIntoView()", diagram)
        devstack.wait_for("the diagram to load", lambda: driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", diagram), timeout=60)
        assert "no poison messages" in driver.find_element(By.TAG_NAME, "body").text
        shots = PROJECT_ROOT / ".gatehouse" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(shots / "status-page.png"))
    finally:
        driver.quit()
    # Without the key the page is refused, as every function-level route is.
    assert requests.get(f"{state['app']['url']}/api/status", timeout=30).status_code == 401
