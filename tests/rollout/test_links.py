"""Signed one-click rollback tokens (pure)."""

from __future__ import annotations

import pytest

from shared.foundation.settings import Settings
from shared.rollout.links import LinkError, link_secret, make_token, read_token, rollback_url

SECRET = "s" * 32


def test_a_token_round_trips():
    token = make_token(SECRET, "fraud", "abc123", now=1000, ttl_seconds=60, nonce="n1")
    claims = read_token(SECRET, token, now=1059)
    assert (claims.endpoint, claims.rollout_id, claims.expires_at, claims.nonce) == (
        "fraud", "abc123", 1060, "n1")


def test_expired_tokens_are_gone():
    token = make_token(SECRET, "fraud", "abc123", now=1000, ttl_seconds=60)
    with pytest.raises(LinkError) as err:
        read_token(SECRET, token, now=1061)
    assert err.value.status == 410


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),      # signature changed
    lambda t: "eyJlIjoiY2h1cm4ifQ" + t[t.index("."):],                  # claims swapped
])
def test_tampered_tokens_are_refused(mangle):
    token = make_token(SECRET, "fraud", "abc123", now=1000)
    with pytest.raises(LinkError) as err:
        read_token(SECRET, mangle(token), now=1001)
    assert err.value.status == 401


def test_a_token_signed_with_another_secret_is_refused():
    token = make_token("o" * 32, "fraud", "abc123", now=1000)
    with pytest.raises(LinkError) as err:
        read_token(SECRET, token, now=1001)
    assert err.value.status == 401


@pytest.mark.parametrize("token", ["", "no-dot", "a.b.c", "!!!.???", "x" * 3000])
def test_malformed_tokens_are_bad_requests(token):
    with pytest.raises(LinkError) as err:
        read_token(SECRET, token, now=1)
    assert err.value.status in (400, 401)


def test_short_secrets_are_refused_and_urls_are_quoted():
    with pytest.raises(ValueError, match="at least 16"):
        make_token("short", "fraud", "abc", now=0)
    url = rollback_url("https://gatehouse.example/", "a+b=.c")
    assert url == "https://gatehouse.example/api/rollouts/rollback?token=a%2Bb%3D.c"
    assert link_secret(Settings.from_env({"GATEHOUSE_ROLLBACK_LINK_SECRET": "  "})) is None
