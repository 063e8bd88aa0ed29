"""The Databricks job task behind a model update trigger: forwards Unity Catalog model changes
to Gatehouse as signed events (Unity Catalog has no registry webhooks).

The job passes the trigger's batch, `{{job.trigger.model.updates}}` — a JSON list of
`{"full_name": ..., "version": ..., "alias_name": ...}` — and its own run id:

    python -m shared.forwarder --condition MODEL_VERSION_READY \
        --updates '{{job.trigger.model.updates}}' --run-id '{{job.run_id}}' \
        --url https://<app>/api/registry/forwarded

with the secret shared with the Function App read from a Databricks secret scope
(`--secret-scope gatehouse --secret-key forwarder-secret`) or from GATEHOUSE_FORWARDER_SECRET.
Each event's delivery id is derived from the job run and the update, so a retried job run is
deduplicated.
infra/databricks/gatehouse_forwarder.job.yml is the bundle definition.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TypeAlias

if __package__ in (None, ""):  # run as a file by a Databricks spark_python_task
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared import events  # noqa: E402
from shared.events import Envelope  # noqa: E402
from shared.intake.signatures import signed_headers  # noqa: E402

CONDITIONS = ("MODEL_CREATED", "MODEL_VERSION_READY", "MODEL_ALIAS_SET")
SOURCE = "/gatehouse/databricks/model-update-trigger"

# The registry events a model update trigger stands for.
Forwarded: TypeAlias = (events.RegisteredModelCreated | events.ModelVersionCreated
                        | events.ModelVersionAliasCreated)


def events_for(condition: str, updates: list[dict]) -> list[Forwarded]:
    """The registry events a batch of trigger updates stands for (pure)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown trigger condition {condition!r}; expected one of {CONDITIONS}")
    found: list[Forwarded] = []
    for index, update in enumerate(updates):
        name = update.get("full_name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"update {index} has no full_name: {update!r}")
        common = {"model_name": name, "registry": "unity-catalog"}
        version = update.get("version")
        if condition == "MODEL_CREATED":
            found.append(events.RegisteredModelCreated(**common))
        elif version is None:
            raise ValueError(f"update {index} ({name}) has no version for {condition}")
        elif condition == "MODEL_VERSION_READY":
            found.append(events.ModelVersionCreated(**common, version=str(version)))
        else:
            alias = update.get("alias_name")
            if not alias:
                raise ValueError(f"update {index} ({name}) has no alias_name for {condition}")
            found.append(events.ModelVersionAliasCreated(**common, alias=alias,
                                                         version=str(version)))
    return found


def delivery_id(run_id: str, payload: events.Payload) -> str:
    key = json.dumps([run_id, payload.model_dump(mode="json")], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def forward(url: str, secret: str, run_id: str, payloads: list[Forwarded], session=None,
            attempts: int = 5) -> list[str]:
    """POST each event, signed; retries 429/5xx and connection errors with backoff."""
    import requests

    session = session or requests.Session()
    accepted = []
    for payload in payloads:
        delivery = delivery_id(run_id, payload)
        body = Envelope.wrap(payload, source=SOURCE, dedupe_key=delivery).to_json().encode()
        for attempt in range(attempts):
            headers = {"Content-Type": "application/json",
                       **signed_headers(secret, delivery, int(time.time()), body)}
            try:
                reply = session.post(url, data=body, headers=headers, timeout=30)
            except requests.ConnectionError:
                reply = None
            if reply is not None and reply.status_code < 300:
                accepted.append(reply.json().get("event_id", ""))
                break
            if reply is not None and reply.status_code < 500 and reply.status_code != 429:
                raise RuntimeError(f"Gatehouse refused {payload.kind} for {payload.model_name}: "
                                   f"HTTP {reply.status_code} {reply.text[:300]}")
            time.sleep(min(2 ** attempt, 30))
        else:
            raise RuntimeError(f"Gatehouse did not accept {payload.kind} for "
                               f"{payload.model_name} after {attempts} attempts")
    return accepted


def databricks_secret(scope: str, key: str) -> str:
    from databricks.sdk import WorkspaceClient

    value = WorkspaceClient().secrets.get_secret(scope=scope, key=key).value or ""
    return base64.b64decode(value).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--condition", required=True, choices=CONDITIONS)
    parser.add_argument("--updates", required=True, help="{{job.trigger.model.updates}}")
    parser.add_argument("--run-id", required=True, help="{{job.run_id}}")
    parser.add_argument("--url", required=True, help="Gatehouse's /api/registry/forwarded")
    parser.add_argument("--secret-scope", help="Databricks secret scope holding the secret")
    parser.add_argument("--secret-key", default="forwarder-secret")
    parser.add_argument("--secret-env", default="GATEHOUSE_FORWARDER_SECRET")
    args = parser.parse_args(argv)
    secret = (databricks_secret(args.secret_scope, args.secret_key) if args.secret_scope
              else os.environ.get(args.secret_env))
    if not secret:
        parser.error(f"no secret: pass --secret-scope or set {args.secret_env}")
    try:
        updates = json.loads(args.updates)
        if not isinstance(updates, list):
            raise ValueError("--updates must be a JSON list")
        payloads = events_for(args.condition, updates)
    except ValueError as exc:
        parser.error(str(exc))
    accepted = forward(args.url, secret, args.run_id, payloads)
    print(json.dumps({"forwarded": len(accepted), "event_ids": accepted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
