"""The `notifications` section of the policy file: routes, the dedup window and storm control.

    [defaults.notifications]
    dedup_window_seconds = 900
    page_storm_window_seconds = 3600

    [[defaults.notifications.routes]]          # every matching route adds its channels
    events = ["rollout.*", "gates.failed"]     # event kinds (fnmatch patterns)
    models = ["fraud-*"]                       # registered model names (fnmatch patterns)
    min_severity = "warning"
    channels = ["teams"]

A notification goes to the union of the channels of every route it matches; channels that are not
configured (no token, webhook or routing key in the settings) are left out, and when nothing is
left it goes to the outbox, so nothing is dropped silently. Lists replace, not merge: a model's
`routes` replace the defaults' routes.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ChannelName = Literal["slack", "teams", "pagerduty", "outbox"]
Severity = Literal["info", "warning", "error", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "error": 2, "critical": 3}

# Events that open or close a page: PagerDuty sees only these (and only triggers at or above
# `page_min_severity`; resolutions always pass).
PAGING_EVENTS = ("rollout.rollback_requested", "rollout.rollback_completed", "monitoring.alert")


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                              description="event kinds, e.g. 'rollout.*' or 'monitoring.alert'")
    models: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                              description="model name patterns; '*' also matches model-less events")
    min_severity: Severity = "info"
    channels: list[ChannelName] = Field(min_length=1)

    def matches(self, kind: str, model: str | None, severity: str) -> bool:
        if SEVERITY_RANK[severity] < SEVERITY_RANK[self.min_severity]:
            return False
        if not any(fnmatchcase(kind, pattern) for pattern in self.events):
            return False
        return any(fnmatchcase(model or "", pattern) for pattern in self.models)


def _default_routes() -> list[Route]:
    return [
        Route(channels=["slack"]),
        Route(min_severity="warning", channels=["teams"]),
        Route(events=list(PAGING_EVENTS), channels=["pagerduty"]),
    ]


class NotificationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[Route] = Field(default_factory=_default_routes)
    dedup_window_seconds: float = Field(
        default=900.0, ge=0, description="identical notifications within it collapse into one")
    page_min_severity: Severity = Field(
        default="error", description="the lowest severity that opens a PagerDuty incident")
    page_storm_window_seconds: float = Field(
        default=3600.0, ge=0,
        description="while one incident for a model is open and younger than this, further "
                    "alerts for that model do not page again; those still firing when it "
                    "resolves get one page then")

    def channels_for(self, kind: str, model: str | None, severity: str) -> list[str]:
        """Every channel some route sends this notification to, in route order, without repeats."""
        chosen: list[str] = []
        for route in self.routes:
            if route.matches(kind, model, severity):
                chosen.extend(name for name in route.channels if name not in chosen)
        return chosen
