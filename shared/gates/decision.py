"""What a gate report means for the registry (pure): aliases, version tags, the event to emit.

- passed: the version gets @challenger; with no champion yet and
  `first_version_becomes_champion`, it also gets @champion.
- failed or inconclusive: no alias; if the version held @challenger (a re-run that now fails),
  that alias is removed.
- stale: a version that passed but is older than the current @champion or @challenger (a
  redelivery delayed by a crash, a re-run of an old version) gets no alias: a version never
  displaces a newer one. It is still recorded and announced as passed, with the reason; the
  rollout refuses to start it for the same rule (shared/rollout/machine.py).
Every outcome is recorded on the version as `gatehouse.gates.*` tags (verdict, report run, who,
when, why, the headline metrics) and announced as GatesPassed or GatesFailed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from shared.gates.suite import SuiteReport
from shared.registry.versions import newer_holder

TAG_PREFIX = "gatehouse.gates."
ACTOR = "gatehouse"
_REASON_LIMIT = 2000  # characters of reason in the event (report.md has every detail)
_TAG_LIMIT = 4000  # MLflow keeps tag values up to 5000 characters (8000 in newer servers)


@dataclass(frozen=True)
class PromotionPlan:
    verdict: str
    event_kind: str  # "gates.passed" or "gates.failed"
    set_aliases: tuple[str, ...]
    remove_challenger: bool
    reason: str
    metrics: dict[str, float]
    version_tags: dict[str, str] = field(default_factory=dict)


def reason_for(report: SuiteReport, requested_by: str | None = None) -> str:
    if report.verdict == "passed":
        checked = [r.name for r in report.results if r.blocking and r.status == "pass"]
        reason = f"every blocking gate passed ({', '.join(checked)})"
        if report.champion_version is None:
            reason += "; no champion yet, judged on the absolute gates"
    else:
        reason = f"{report.verdict}: " + "; ".join(f"{r.name} {r.status}: {r.detail}"
                                                   for r in report.blocking)
    if requested_by:
        reason += f" (re-run requested by {requested_by})"
    return reason


def stale_reason(version: str, current_champion: str | None,
                 current_challenger: str | None) -> str | None:
    """Why a passing version gets no alias (a newer one holds @champion or @challenger)."""
    newer = newer_holder(version, {"champion": current_champion,
                                   "challenger": current_challenger})
    if newer is None:
        return None
    role, holder = newer
    return f"not made @challenger: v{holder} is @{role} and newer than v{version}"


def plan_promotion(report: SuiteReport, first_version_becomes_champion: bool,
                   current_challenger: str | None, report_run_id: str | None,
                   report_url: str | None, decided_at: str,
                   requested_by: str | None = None, *,
                   current_champion: str | None = None) -> PromotionPlan:
    passed = report.verdict == "passed"
    aliases: tuple[str, ...] = ()
    reason = reason_for(report, requested_by)
    stale = stale_reason(report.version, current_champion, current_challenger) if passed else None
    if stale is not None:
        reason += f"; {stale}"
    elif passed:
        aliases = ("challenger",)
        if report.champion_version is None and first_version_becomes_champion:
            aliases = ("challenger", "champion")
    tags = {
        "verdict": report.verdict,
        "report_run_id": report_run_id or "",
        "report_url": report_url or "",
        "blocking": ",".join(r.name for r in report.blocking),
        "champion_version": report.champion_version or "",
        "decided_by": ACTOR,
        "decided_at": decided_at,
        "reason": reason[:_TAG_LIMIT],
        "metrics": json.dumps({k: round(v, 6) for k, v in report.headline.items()},
                              sort_keys=True)[:_TAG_LIMIT],
        "aliases": ",".join(aliases),
    }
    return PromotionPlan(
        verdict=report.verdict, event_kind="gates.passed" if passed else "gates.failed",
        set_aliases=aliases,
        remove_challenger=not passed and current_challenger == report.version,
        reason=reason[:_REASON_LIMIT], metrics=dict(report.headline),
        version_tags={TAG_PREFIX + key: value for key, value in tags.items()})
