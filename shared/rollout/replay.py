"""Replay recent live payloads against a challenger before it gets any traffic."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class ReplayOutcome:
    ok: bool
    replayed: int
    failed: int
    detail: str


def _essence(message: str) -> str:
    """MLflow prefixes the whole input frame; keep the error itself."""
    if "Error:" in message:
        message = message.rsplit("Error:", 1)[1]
    return " ".join(message.split())[:300]


def replay(payloads: list[dict], model) -> ReplayOutcome:
    """Score each request body (Databricks/MLflow scoring shapes) with `model`, through MLflow's
    own scoring code; any failure means the version cannot score today's requests."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import invocations

    if not payloads:
        return ReplayOutcome(True, 0, 0, "no recent live payloads to replay")
    schema = model.metadata.get_input_schema()
    failures: list[str] = []
    for body in payloads:
        try:
            reply = invocations(json.dumps(body), "application/json", model, schema)
            if reply.status != 200:
                failures.append(f"status {reply.status}: {str(reply.response)[:200]}")
        except MlflowException as exc:
            failures.append(_essence(exc.message or str(exc)))
        except Exception as exc:  # the model's own failure is the finding, not a crash
            failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
    if failures:
        return ReplayOutcome(False, len(payloads), len(failures),
                             f"{len(failures)} of {len(payloads)} recent payloads failed; "
                             f"first: {failures[0]}")
    return ReplayOutcome(True, len(payloads), 0,
                         f"replayed {len(payloads)} recent live payloads without an error")
