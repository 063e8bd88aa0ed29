"""What Gatehouse is doing: rollouts with their history, recent gate verdicts, alerts and pages,
poison messages. Read from Gatehouse's storage, the MLflow registry's `gatehouse.gates.*` tags
and the outbox; shared by `gatehouse status` and the status page."""

from __future__ import annotations

import logging
from pathlib import Path

from shared.registry import tags as registry_tags

log = logging.getLogger("gatehouse.status")
GATE_TAG = "gatehouse.gates."
RECENT = 20
ALERT_EVENT = "monitoring.alert"


def rollouts(storage: str) -> list[dict]:
    from shared.rollout.service import RolloutService
    from shared.rollout.store import RolloutStore

    store = RolloutStore.connect(storage)
    return [{**RolloutService.describe(record),
             "history": [t.model_dump(mode="json") for t in store.history(record.endpoint)]}
            for record in store.records()]


def verdicts(tracking_uri: str, limit: int = RECENT) -> list[dict]:
    """The latest gate verdicts recorded on model versions, newest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = []
    aliases: dict[str, dict[str, list[str]]] = {}  # version searches return no aliases
    for mv in client.search_model_versions(max_results=1000):
        version_tags = mv.tags or {}
        if not version_tags.get(GATE_TAG + "decided_at"):
            continue
        if mv.name not in aliases:
            aliases[mv.name] = {}
            for alias, target in (client.get_registered_model(mv.name).aliases or {}).items():
                aliases[mv.name].setdefault(str(target), []).append(alias)
        found.append({
            "model": mv.name, "version": str(mv.version),
            "verdict": version_tags.get(GATE_TAG + "verdict"),
            "blocking": version_tags.get(GATE_TAG + "blocking"),
            "aliases": ",".join(sorted(aliases[mv.name].get(str(mv.version), []))),
            "decided_at": version_tags.get(GATE_TAG + "decided_at"),
            "reason": version_tags.get(GATE_TAG + "reason"),
            "report_run_id": version_tags.get(registry_tags.GATE_REPORT_RUN),
            "report_url": version_tags.get(GATE_TAG + "report_url"),
        })
    found.sort(key=lambda v: v["decided_at"] or "", reverse=True)
    return found[:limit]


def alerts(outbox: Path | None, limit: int = RECENT) -> list[dict]:
    """Alert notifications and pages from the outbox, newest first."""
    from shared.channels.outbox import OutboxChannel

    if outbox is None:
        return []
    notes = [n for n in OutboxChannel(outbox).read()
             if n.get("page") or str(n.get("about_event_type", "")).endswith(ALERT_EVENT)]
    return list(reversed(notes))[:limit]


def gather(storage: str | None, tracking_uri: str | None, outbox: Path | None) -> dict:
    """Every section; a source that cannot be read leaves its section empty and says why."""
    from shared.ops.poison import poison_messages

    status: dict = {"rollouts": [], "verdicts": [], "alerts": [], "poison": [], "problems": {}}
    no_storage = ("no storage: run `gatehouse up` in this directory, or set "
                  "AzureWebJobsStorage")
    readers = [("rollouts", storage, no_storage, lambda: rollouts(storage or "")),
               ("poison", storage, no_storage, lambda: list(poison_messages(storage or ""))),
               ("verdicts", tracking_uri, "no MLflow server: pass --tracking-uri or set "
                "MLFLOW_TRACKING_URI", lambda: verdicts(tracking_uri or "")),
               ("alerts", outbox, "no outbox file", lambda: alerts(outbox))]
    for section, source, missing, read in readers:
        if not source:
            status["problems"][section] = missing
            continue
        try:
            status[section] = read()
        except Exception as exc:  # one unreachable source must not hide the others
            log.debug("reading %s failed", section, exc_info=True)
            status["problems"][section] = f"{exc.__class__.__name__}: {exc}"[:300]
    return status
