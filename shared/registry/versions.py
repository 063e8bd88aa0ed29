"""Ordering model versions (pure), for the stale version rule: a version never displaces a newer
one, neither from @challenger (a gate pass) nor from a rollout (start_canary).

MLflow, Databricks and Unity Catalog number a model's versions 1, 2, 3, ... in the order they
were registered, so a higher number is a newer version. A version that is not a number has no
place in that order and is never called newer or older.
"""

from __future__ import annotations


def is_newer(version: str | None, than: str | None) -> bool:
    """True when both are version numbers and `version` was registered after `than`."""
    if version is None or than is None:
        return False
    version, than = str(version).strip(), str(than).strip()
    return version.isdigit() and than.isdigit() and int(version) > int(than)


def newer_holder(version: str, holders: dict[str, str | None]) -> tuple[str, str] | None:
    """(role, version) of the first holder newer than `version`, e.g. ("champion", "3");
    None when no holder is newer."""
    for role, holder in holders.items():
        if is_newer(holder, version):
            return role, str(holder)
    return None
