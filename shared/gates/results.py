"""The typed result every gate returns, and the rule for what blocks a promotion."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, SupportsFloat

if TYPE_CHECKING:
    from shared.events import GateOutcome

GateStatus = Literal["pass", "fail", "warn", "inconclusive", "skipped"]
PASS: GateStatus = "pass"
FAIL: GateStatus = "fail"
WARN: GateStatus = "warn"
INCONCLUSIVE: GateStatus = "inconclusive"
SKIPPED: GateStatus = "skipped"

# An inconclusive gate is not a pass: a holdout too small to resolve a threshold must not let a
# model through. Warnings and skipped gates are reported without blocking.
BLOCKING_STATUSES = frozenset({FAIL, INCONCLUSIVE})
DETAIL_LIMIT = 1000  # characters of detail carried by events (the report keeps all of it)


@dataclass(frozen=True)
class GateResult:
    name: str
    status: GateStatus
    blocking: bool
    observed: float | None = None
    threshold: float | None = None
    detail: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        return self.blocking and self.status in BLOCKING_STATUSES

    def to_outcome(self) -> GateOutcome:
        from shared.events import GateOutcome

        return GateOutcome(name=self.name, status=self.status, blocking=self.blocking,
                           observed=finite_or_none(self.observed),
                           threshold=finite_or_none(self.threshold),
                           detail=self.detail[:DETAIL_LIMIT] or None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "blocking": self.blocking,
                "blocks": self.blocks, "observed": finite_or_none(self.observed),
                "threshold": finite_or_none(self.threshold), "detail": self.detail,
                "evidence": jsonable(self.evidence)}


def skipped(name: str, blocking: bool, why: str) -> GateResult:
    return GateResult(name, SKIPPED, blocking, detail=why)


def finite_or_none(value: SupportsFloat | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def jsonable(value: Any) -> Any:
    """Evidence as plain JSON: numpy scalars and arrays become numbers and lists, and the
    non-finite floats JSON cannot carry become null."""
    import numpy as np

    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite_or_none(value)
    return value
