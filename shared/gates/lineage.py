"""Lineage: the facts that tie a model version to how it was made. Missing lineage blocks.

A required tag counts when it is set, non-blank, on the model version or on its source run (the
version's tag wins when both have it). A run id counts when the version names its source run.
"""

from __future__ import annotations

from shared.gates.results import FAIL, PASS, GateResult


def lineage_gate(run_id: str | None, version_tags: dict[str, str], run_tags: dict[str, str],
                 required_tags: list[str], require_run_id: bool, blocking: bool) -> GateResult:
    found = {**{k: v for k, v in run_tags.items() if str(v).strip()},
             **{k: v for k, v in version_tags.items() if str(v).strip()}}
    missing = [tag for tag in required_tags if tag not in found]
    if require_run_id and not (run_id or "").strip():
        missing.insert(0, "run id")
    evidence = {"run_id": run_id, "required": (["run id"] if require_run_id else [])
                + list(required_tags),
                "found": {tag: found[tag] for tag in required_tags if tag in found},
                "missing": missing}
    if missing:
        return GateResult("lineage", FAIL, blocking, observed=float(len(missing)), threshold=0.0,
                          detail=f"missing lineage: {', '.join(missing)}", evidence=evidence)
    return GateResult("lineage", PASS, blocking, observed=0.0, threshold=0.0,
                      detail="run id and tags " + ", ".join(required_tags) + " present",
                      evidence=evidence)
