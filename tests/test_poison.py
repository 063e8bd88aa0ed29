"""Poison with a reason, end to end on Azurite: a handler that keeps failing on the local host,
its message on `<queue>-poison`, and `gatehouse poison list` naming the handler, the attempts and
the last error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import azure.functions as func

from shared.dev.local_host import LocalHost
from shared.events import Envelope, ModelVersionCreated
from shared.foundation.bus import Bus
from shared.foundation.storage import PROJECT_ROOT

HOST_JSON = {"version": "2.0", "functionTimeout": "00:00:30", "extensions": {"queues": {
    "batchSize": 4, "maxPollingInterval": "00:00:00.5", "visibilityTimeout": "00:00:00",
    "maxDequeueCount": 3, "messageEncoding": "base64"}}}


def failing_app(queue: str) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.queue_trigger(arg_name="msg", queue_name=queue, connection="AzureWebJobsStorage")
    def register_version(msg: func.QueueMessage) -> None:
        from shared.foundation.handling import process_event

        def refuse(_: Envelope, data: ModelVersionCreated) -> None:
            raise RuntimeError(f"the registry has no version {data.version} of {data.model_name}")

        process_event(msg.get_body(), ModelVersionCreated, "register_version", refuse, queue=queue)

    return app


def test_a_poison_message_is_listed_with_its_handler_attempts_and_last_error(storage_env,
                                                                             tmp_path):
    queue = f"poisoned-{uuid.uuid4().hex[:8]}"
    (tmp_path / "host.json").write_text(json.dumps(HOST_JSON))
    envelope = Envelope.wrap(ModelVersionCreated(model_name="fraud", version="9"), source="/tests")
    bus = Bus(storage_env)
    host = LocalHost(failing_app(queue), tmp_path, port=0).start()
    try:
        bus.send(queue, envelope)
        deadline = time.monotonic() + 30
        while bus.depth(f"{queue}-poison") == 0:
            assert time.monotonic() < deadline, "the message never reached the poison queue"
            time.sleep(0.2)
    finally:
        host.stop()
    [poisoned] = bus.peek(f"{queue}-poison")
    assert poisoned.id == envelope.id  # intact

    listed = subprocess.run([sys.executable, "-m", "shared.ops.cli", "poison", "list", queue,
                             "--json"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "AzureWebJobsStorage": storage_env})
    assert listed.returncode == 0, listed.stderr
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["queue"] == f"{queue}-poison"
    assert entry["handler"] == "register_version"
    assert entry["attempts"] == 3  # maxDequeueCount
    assert entry["last_error"] == "RuntimeError: the registry has no version 9 of fraud"
    assert entry["event_id"] == envelope.id and entry["last_failed_at"]
