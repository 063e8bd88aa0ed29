"""Signed one-click rollback links: `GET /api/rollouts/rollback?token=...` shows what would be
rolled back, and its button POSTs the token to do it. A GET never acts: chat apps, link
previews and mail scanners open links on their own. `answer_link` is the route's decision: a
browser gets an HTML page, anything else JSON.

The token is `base64url(claims).base64url(HMAC-SHA256(secret, claims))` where claims name the
endpoint, the rollout, an expiry and a nonce. It rolls back only that rollout, only before it
expires, and only once: once the rollback is requested, the nonce is spent with a conditional
insert on the state table.
The secret comes from the GATEHOUSE_ROLLBACK_LINK_SECRET setting and is never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, quote

from shared.foundation import runtime
from shared.foundation.failpoints import failpoint
from shared.foundation.http import HTML, BodyError, Reply, error_reply, json_text
from shared.foundation.settings import Settings

SECRET_SETTING = "GATEHOUSE_ROLLBACK_LINK_SECRET"
DEFAULT_TTL_SECONDS = 24 * 3600.0
MIN_SECRET_LENGTH = 16
LINK_ACTOR = "rollback-link"


class LinkError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LinkClaims:
    endpoint: str
    rollout_id: str
    expires_at: float
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"gatehouse-rollback-v1." + body,
                    hashlib.sha256).digest()


def link_secret(settings: Settings | None = None) -> str | None:
    return (runtime.settings() if settings is None else settings).rollback_link_secret


def make_token(secret: str, endpoint: str, rollout_id: str, *, now: float,
               ttl_seconds: float = DEFAULT_TTL_SECONDS, nonce: str | None = None) -> str:
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"{SECRET_SETTING} must be at least {MIN_SECRET_LENGTH} characters")
    claims = {"v": 1, "e": endpoint, "r": rollout_id, "x": int(now + ttl_seconds),
              "n": nonce or secrets.token_urlsafe(12)}
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return f"{_b64(body)}.{_b64(_signature(secret, body))}"


def read_token(secret: str, token: str, *, now: float) -> LinkClaims:
    """The token's claims, or LinkError: 400 malformed, 401 bad signature, 410 expired."""
    if not token or token.count(".") != 1 or len(token) > 2048:
        raise LinkError(400, "the rollback token is missing or malformed")
    body_part, signature_part = token.split(".")
    try:
        body, signature = _unb64(body_part), _unb64(signature_part)
    except (ValueError, TypeError):
        raise LinkError(400, "the rollback token is not base64url") from None
    if not hmac.compare_digest(signature, _signature(secret, body)):
        raise LinkError(401, "the rollback token's signature does not match")
    try:
        claims = json_text(body.decode("utf-8"), "the rollback token's claims", "token")
        parsed = LinkClaims(str(claims["e"]), str(claims["r"]), float(claims["x"]),
                            str(claims["n"]))
    except (BodyError, ValueError, KeyError, TypeError, OverflowError):
        raise LinkError(400, "the rollback token's claims are incomplete") from None
    if now > parsed.expires_at:
        raise LinkError(410, "the rollback link has expired")
    return parsed


def rollback_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/api/rollouts/rollback?token={quote(token, safe='')}"


def signed_rollback_url(base_url: str, endpoint: str, rollout_id: str, *, now: float,
                        ttl_seconds: float = DEFAULT_TTL_SECONDS,
                        settings: Settings | None = None) -> str | None:
    """The one-click link a notification can carry; None when links are not enabled."""
    secret = link_secret(settings)
    if secret is None:
        return None
    return rollback_url(base_url, make_token(secret, endpoint, rollout_id, now=now,
                                             ttl_seconds=ttl_seconds))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>{title}</h1>
{content}
</body></html>
"""


def rollback_link_signer(store, secret: str | None, public_url: str | None,
                         clock=time.time):
    """Signs one-click rollback links for the rollout of the version a notification is about
    (`store` is the RolloutStore); None when the app has no link secret or no public address."""
    if not secret or not public_url:
        return None

    def sign(target) -> str | None:
        record = store.load(target.endpoint).record
        rollout = next((r for r in (record.rollouts() if record else [])
                        if r.model_name == target.model_name and r.challenger == target.version),
                       None)
        if rollout is None:
            return None
        return rollback_url(public_url, make_token(secret, target.endpoint, rollout.id,
                                                   now=clock()))
    return sign


def message_page(title: str, message: str) -> str:
    return PAGE.format(title=html.escape(title), content=f"<p>{html.escape(message)}</p>")


def confirmation_page(preview: dict, token: str) -> str:
    """The page the link opens: what a rollback would do, and the button that does it."""
    version, endpoint = html.escape(str(preview["version"])), html.escape(preview["endpoint"])
    restores = preview.get("restores")
    back_to = f"v{html.escape(str(restores))}" if restores else "the previous champion"
    content = (
        f"<p>Model <b>{html.escape(preview['model_name'])}</b> v{version} on endpoint "
        f"<b>{endpoint}</b> (rollout {html.escape(preview['rollout_id'])}, "
        f"{html.escape(preview['phase'])}). Rolling back sends all traffic to {back_to}.</p>"
        f'<form method="post"><input type="hidden" name="token" value="{html.escape(token)}">'
        f'<button type="submit">Roll back v{version} on {endpoint}</button></form>'
        f"<p>The link works once.</p>")
    return PAGE.format(title=f"Roll back v{version} on {endpoint}?", content=content)


# ---- the route: GET shows, POST rolls back once ----

class SpentLinks(Protocol):
    def used(self, key: str) -> bool: ...
    def use_once(self, key: str, record: dict) -> bool: ...


class Rollbacks(Protocol):
    def rollback_preview(self, endpoint: str, rollout_id: str) -> Reply: ...
    def request_rollback(self, endpoint: str, *, actor: str, reason: str,
                         version: str | None = None, rollout_id: str | None = None) -> Reply: ...


@dataclass(frozen=True)
class LinkRequest:
    method: str
    token: str
    wants_html: bool

    @classmethod
    def read(cls, method: str, query_token: str | None, body: bytes | None,
             accept: str | None) -> LinkRequest:
        """The token comes in the query string, or in the confirmation form's body."""
        token = query_token or ""
        if not token:
            form = parse_qs((body or b"").decode("utf-8", errors="replace"))
            token = (form.get("token") or [""])[-1]
        return cls(method.upper(), token, "text/html" in (accept or ""))


def links_off(request: LinkRequest) -> Reply:
    """The answer to every link while GATEHOUSE_ROLLBACK_LINK_SECRET is unset."""
    return _shown(request, error_reply(404, "one-click rollback links are not enabled here"))


def answer_link(request: LinkRequest, secret: str | None, spent: SpentLinks,
                rollbacks: Rollbacks, now: float) -> Reply:
    """Opening the link changes nothing; POSTing its token rolls back that rollout, once."""
    if secret is None:
        return links_off(request)
    try:
        claims = read_token(secret, request.token, now=now)
    except LinkError as exc:
        return _shown(request, error_reply(exc.status, str(exc)))
    spent_key = f"rollback-link|{claims.nonce}"
    if spent.used(spent_key):
        return _shown(request, _used())
    preview = rollbacks.rollback_preview(claims.endpoint, claims.rollout_id)
    if not preview.ok:
        return _shown(request, preview)
    if request.method == "GET":
        return _confirmation(request, preview)
    # The rollback first, then the link spent: a crash in between leaves the link unspent, and
    # using it again finds that rollout rolling back already (409), so it is done once either way.
    requested = rollbacks.request_rollback(claims.endpoint, actor=LINK_ACTOR,
                                           reason="one-click rollback link",
                                           rollout_id=claims.rollout_id)
    failpoint("rollout.link_rollback_requested")
    if requested.ok:
        spent.use_once(spent_key, {"endpoint": claims.endpoint,
                                   "rollout_id": claims.rollout_id, "used_at": now})
        failpoint("rollout.link_spent")
    return _shown(request, requested)


def _used() -> Reply:
    return error_reply(410, "this rollback link was used already")


def _confirmation(request: LinkRequest, preview: Reply) -> Reply:
    if request.wants_html:
        return Reply(200, confirmation_page(preview.body, request.token), content_type=HTML)
    return Reply(200, {**preview.body, "confirm": "POST to this URL to roll back"})


def _shown(request: LinkRequest, reply: Reply) -> Reply:
    """The reply as it is (JSON), or as a page for a browser."""
    if not request.wants_html:
        return reply
    body = reply.body
    title = "Rollback requested" if reply.status == 202 else "Nothing was rolled back"
    text = body.get("error") or (f"Gatehouse is rolling back v{body.get('version')} on "
                                 f"{body.get('endpoint')}; the notifications follow it.")
    return Reply(reply.status, message_page(title, text), reply.headers, content_type=HTML)
