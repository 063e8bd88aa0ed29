"""Building the channels the settings configure, and the dispatcher that is handed them.

Each channel has a builder in CHANNEL_BUILDERS: given the settings and the resources channels
share, it returns the channel, or None when the settings do not configure it. Adding a channel is
its module (a class with `name`, `updates_in_place`, `resends_safely` and `deliver`, see base.py)
and one entry here (and one in dispatch.AFTER_SEND, its failpoint after a send).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from shared.channels.base import Channel
from shared.channels.dispatch import Dispatcher, NotificationState, PolicyLookup, RollbackLink
from shared.channels.outbox import OutboxChannel
from shared.channels.pagerduty import OpenIncidents, PagerDutyChannel, events_client
from shared.channels.redaction import make_redactor, protect_logs, url_secrets
from shared.channels.slack import SlackChannel, SlackThreads, slack_client
from shared.channels.teams import TeamsChannel
from shared.foundation import runtime
from shared.foundation.settings import Settings
from shared.foundation.state import Table
from shared.policy import notification_policy_for
from shared.rollout.links import rollback_link_signer
from shared.rollout.store import RolloutStore


@dataclass(frozen=True)
class ChannelSettings:
    slack_bot_token: str | None = field(default=None, repr=False)
    slack_channel: str | None = None
    slack_signing_secret: str | None = field(default=None, repr=False)
    slack_api_url: str | None = None
    teams_webhook_url: str | None = field(default=None, repr=False)
    pagerduty_routing_key: str | None = field(default=None, repr=False)
    pagerduty_events_url: str | None = None
    pagerduty_ca_bundle: str | None = None
    mlflow_ui_url: str | None = None
    retry_scale: float = 1.0  # multiplies retry back-off (tests shrink it); Retry-After is honoured

    @classmethod
    def from_settings(cls, app: Settings) -> ChannelSettings:
        settings = cls(
            slack_bot_token=app.slack_bot_token,
            slack_channel=app.slack_channel,
            slack_signing_secret=app.slack_signing_secret,
            slack_api_url=app.slack_api_url,
            teams_webhook_url=app.teams_webhook_url,
            pagerduty_routing_key=app.pagerduty_routing_key,
            pagerduty_events_url=app.pagerduty_events_url,
            pagerduty_ca_bundle=app.pagerduty_ca_bundle,
            mlflow_ui_url=app.mlflow_ui_url,
            retry_scale=app.notify_retry_scale,
        )
        if settings.slack_bot_token and not settings.slack_channel:
            raise ValueError("setting SLACK_CHANNEL is required when SLACK_BOT_TOKEN is set")
        return settings

    def configured(self) -> set[str]:
        names = {"outbox"}
        if self.slack_bot_token:
            names.add("slack")
        if self.teams_webhook_url:
            names.add("teams")
        if self.pagerduty_routing_key:
            names.add("pagerduty")
        return names

    def secrets(self) -> list[str]:
        values = [self.slack_bot_token, self.slack_signing_secret, self.pagerduty_routing_key]
        fragments = [value for value in values if value]
        if self.teams_webhook_url:
            fragments.extend(url_secrets(self.teams_webhook_url))
        return fragments


@dataclass(frozen=True)
class ChannelResources:
    """What channels share besides their settings."""

    table: Table       # the notification state table: Slack threads, open PagerDuty incidents
    outbox_path: Path


ChannelBuilder = Callable[[ChannelSettings, ChannelResources], Channel | None]


def build_outbox(settings: ChannelSettings, resources: ChannelResources) -> Channel:
    return OutboxChannel(resources.outbox_path)


def build_slack(settings: ChannelSettings, resources: ChannelResources) -> Channel | None:
    if not (settings.slack_bot_token and settings.slack_channel):
        return None
    client = slack_client(settings.slack_bot_token, settings.slack_api_url,
                          backoff=0.5 * settings.retry_scale)
    return SlackChannel(client, settings.slack_channel, SlackThreads(resources.table))


def build_teams(settings: ChannelSettings, resources: ChannelResources) -> Channel | None:
    if not settings.teams_webhook_url:
        return None
    return TeamsChannel(settings.teams_webhook_url, backoff=0.5 * settings.retry_scale)


def build_pagerduty(settings: ChannelSettings, resources: ChannelResources) -> Channel | None:
    if not settings.pagerduty_routing_key:
        return None
    client = events_client(settings.pagerduty_routing_key, settings.pagerduty_events_url,
                           settings.pagerduty_ca_bundle, sleep_timer=1.5 * settings.retry_scale)
    return PagerDutyChannel(client, OpenIncidents(resources.table))


CHANNEL_BUILDERS: dict[str, ChannelBuilder] = {
    "outbox": build_outbox,
    "slack": build_slack,
    "teams": build_teams,
    "pagerduty": build_pagerduty,
}


def build_channels(settings: ChannelSettings, resources: ChannelResources) -> dict[str, Channel]:
    """Every channel the settings configure, by name."""
    built = {name: build(settings, resources) for name, build in CHANNEL_BUILDERS.items()}
    return {name: channel for name, channel in built.items() if channel is not None}


def build_dispatcher(settings: ChannelSettings, connection_string: str, outbox_path: Path,
                     *, policy_for: PolicyLookup | None = None,
                     rollback_link: RollbackLink | None = None) -> Dispatcher:
    """The configured channels, sharing one state table, behind one dispatcher."""
    protect_logs(settings.secrets())
    state = NotificationState.connect(connection_string)
    channels = build_channels(settings, ChannelResources(state.table, outbox_path))
    return Dispatcher(channels, state, policy_for or notification_policy_for,
                      mlflow_ui_url=settings.mlflow_ui_url, rollback_link=rollback_link,
                      redact=make_redactor(settings.secrets()))



def dispatcher_from_runtime() -> Dispatcher:
    """The dispatcher a notify worker uses, built once per settings."""
    app = runtime.settings()
    return _dispatcher(ChannelSettings.from_settings(app), runtime.storage_connection(),
                       app.outbox_path, app.rollback_link_secret, app.public_url)


@lru_cache(maxsize=4)
def _dispatcher(settings: ChannelSettings, connection: str, outbox_path: Path,
                link_secret: str | None, public_url: str | None) -> Dispatcher:
    signer = rollback_link_signer(RolloutStore.connect(connection), link_secret, public_url)
    return build_dispatcher(settings, connection, outbox_path, rollback_link=signer)
