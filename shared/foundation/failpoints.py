"""Failpoints: named points at side-effect boundaries where tests make the process die or fail.

After FoundationDB's simulation and TiKV's fail-rs. Each point is a call,
`failpoint("gates.report_logged")`, placed just after (or before) a side effect. It does nothing
unless the environment arms it:

    GATEHOUSE_FAILPOINTS="gates.report_logged=exit;receiver.enqueued=raise"

- `exit`  ends the process at once with status 137, as `kill -9` would: no `finally`, no flush,
  no lease given back, no message deleted.
- `raise` raises `FailpointError` there, so the caller's error handling runs.
- `sleep(S)` waits S seconds (a slow handler, for lease tests).
- `trace` only logs that the point was reached (which flow reaches which point).

`*=trace` arms every point not named otherwise.

A point fires every time it is reached while armed; the crash suite restarts the host without the
variable. Names are `<component>.<what just happened>`; `tests/crash` checks that each one placed
in the code has a crash scenario.
"""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache

ENVIRONMENT = "GATEHOUSE_FAILPOINTS"
EXIT_STATUS = 137
log = logging.getLogger("gatehouse.failpoints")


class FailpointError(RuntimeError):
    """Raised by an armed `raise` failpoint."""


@lru_cache(maxsize=8)
def armed(spec: str) -> dict[str, str]:
    """`name=action;name=action` as a mapping (pure; cached per distinct value)."""
    points: dict[str, str] = {}
    for part in spec.replace(",", ";").split(";"):
        name, _, action = part.strip().partition("=")
        if name:
            points[name.strip()] = action.strip() or "exit"
    return points


def failpoint(name: str) -> None:
    """Inert unless GATEHOUSE_FAILPOINTS arms `name` (see the module docstring)."""
    spec = os.environ.get(ENVIRONMENT)
    if not spec:
        return
    points = armed(spec)
    action = points.get(name, points.get("*"))
    if action is None:
        return
    log.warning("failpoint %s: %s", name, action)
    if action == "trace":
        return
    if action == "exit":
        os._exit(EXIT_STATUS)
    if action == "raise":
        raise FailpointError(f"failpoint {name}")
    if action.startswith("sleep(") and action.endswith(")"):
        time.sleep(float(action[6:-1]))
        return
    raise ValueError(f"failpoint {name}: unknown action {action!r} (exit, raise, sleep(S), trace)")
