"""The Jobs peer rejects what Databricks rejects, so the gate run's submission is checked against
the wire format (the Spark test runs the real job through it)."""

from __future__ import annotations

import pytest
import requests

from shared.gates.spark import SummaryRequest
from shared.gates.spark_job import idempotency_token
from tests.gates.jobs_peer import TOKEN, JobsPeer

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TASK = {"task_key": "summarise", "existing_cluster_id": "c",
        "spark_python_task": {"python_file": "/x/spark_job.py", "parameters": ["{}"]}}


@pytest.fixture
def peer():
    peer = JobsPeer(lambda file, parameters: (True, "GATEHOUSE_SUMMARY {}")).start()
    yield peer
    peer.stop()


@pytest.mark.parametrize("body, message", [
    ({"tasks": []}, "exactly one task"),
    ({"tasks": [{**TASK, "task_key": "bad key!"}]}, "task_key"),
    ({"tasks": [{**TASK, "spark_python_task": {"python_file": "/x", "parameters": [1]}}]},
     "list of strings"),
    ({"tasks": [{**TASK, "environment_key": "e"}]}, "exactly one compute"),
    ({"tasks": [TASK], "idempotency_token": "x" * 65}, "64 characters"),
    ({"tasks": [TASK], "cluster": "c"}, "unknown fields"),
])
def test_malformed_submissions_are_rejected(peer, body, message):
    reply = requests.post(f"{peer.url}/api/2.2/jobs/runs/submit", json=body, headers=HEADERS,
                          timeout=5)
    assert reply.status_code == 400 and message in reply.json()["message"]
    assert peer.submits == 0


def test_the_same_token_answers_the_same_run(peer):
    body = {"tasks": [TASK], "idempotency_token": "t" * 64}
    first = requests.post(f"{peer.url}/api/2.1/jobs/runs/submit", json=body, headers=HEADERS,
                          timeout=5).json()
    second = requests.post(f"{peer.url}/api/2.2/jobs/runs/submit", json=body, headers=HEADERS,
                           timeout=5).json()
    assert first == second and peer.submits == 1
    output = requests.get(f"{peer.url}/api/2.2/jobs/runs/get-output",
                          params={"run_id": first["run_id"]}, headers=HEADERS, timeout=5)
    assert output.status_code == 400  # the parent run of a task: its task run has the output


def test_the_token_follows_from_the_gate_request_and_what_it_summarises():
    request = SummaryRequest("models:/m/1", "main.gates.holdout", {"task": "binary_classification"})
    token = idempotency_token(request, "m/1")
    assert len(token) == 64 and token == idempotency_token(request, "m/1")
    assert token != idempotency_token(request, "m/1/rerun/2")
    other = SummaryRequest("models:/m/2", "main.gates.holdout", {"task": "binary_classification"})
    assert token != idempotency_token(other, "m/1")
