"""Which handler queues act on which event kinds (pure data, no I/O)."""

from __future__ import annotations

from shared.foundation import queues

HANDLER_QUEUES: dict[str, tuple[str, ...]] = {
    "model_version.created": (queues.RUN_GATES,),
    "model_version_tag.set": (queues.RUN_GATES,),  # a `gatehouse.rerun` tag asks for a re-run
    "gates.passed": (queues.START_CANARY,),
    "rollout.rollback_requested": (queues.OPEN_ROLLBACK,),
    "monitoring.alert": (queues.TRIGGER_RETRAINING,),
}


def handler_queues(kind: str) -> tuple[str, ...]:
    return HANDLER_QUEUES.get(kind, ())
