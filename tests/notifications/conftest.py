"""Local Slack, PagerDuty (HTTPS) and Teams peers, and the settings that point Gatehouse at them."""

from __future__ import annotations

import secrets
import uuid

import pytest

from shared.foundation import runtime
from tests.notifications.peers import PagerDutyPeer, SlackPeer, TeamsPeer, make_self_signed_cert

SLACK_CHANNEL = "#gatehouse-test"
MLFLOW_UI = "http://mlflow.test.invalid:5000"


@pytest.fixture(scope="session")
def slack_token() -> str:
    return "xoxb-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def signing_secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="session")
def routing_key() -> str:
    return secrets.token_hex(16)  # 32 characters, like a PagerDuty integration key


@pytest.fixture(scope="session")
def slack_peer(slack_token):
    peer = SlackPeer(slack_token, SLACK_CHANNEL).start()
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def pagerduty_peer(routing_key, tls_files):
    peer = PagerDutyPeer(routing_key, *tls_files).start()
    yield peer
    peer.stop()


@pytest.fixture(scope="session")
def teams_peer():
    peer = TeamsPeer(secrets.token_urlsafe(24)).start()
    yield peer
    peer.stop()


@pytest.fixture
def peers(slack_peer, pagerduty_peer, teams_peer):
    yield slack_peer, pagerduty_peer, teams_peer
    for peer in (slack_peer, pagerduty_peer, teams_peer):
        peer.clear_faults()


@pytest.fixture
def channel_env(monkeypatch, tmp_path, peers, slack_token, signing_secret, routing_key,
                tls_files):
    """Every channel configured against the local peers; fast retries."""
    slack, pagerduty, teams = peers
    values = {
        "SLACK_BOT_TOKEN": slack_token, "SLACK_CHANNEL": SLACK_CHANNEL,
        "SLACK_SIGNING_SECRET": signing_secret, "SLACK_API_URL": slack.api_url,
        "TEAMS_WEBHOOK_URL": teams.webhook_url,
        "PAGERDUTY_ROUTING_KEY": routing_key, "PAGERDUTY_EVENTS_URL": f"{pagerduty.url}/v2/enqueue",
        "PAGERDUTY_CA_BUNDLE": str(tls_files[0]),
        "MLFLOW_UI_URL": MLFLOW_UI, "GATEHOUSE_NOTIFY_RETRY_SCALE": "0.01",
        "GATEHOUSE_OUTBOX_PATH": str(tmp_path / "outbox.jsonl"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    yield values
    runtime.reset()


@pytest.fixture
def model_name() -> str:
    return f"fraud-{uuid.uuid4().hex[:8]}"

