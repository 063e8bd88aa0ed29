"""The crashers found so far (tests/fuzz/corpus/*.json), each asserted to get the right answer.

A case names the function, its route params, headers and body (`body`, or `body_hex` for bytes),
and how to sign it (`sign`: mlflow, databricks, forwarded or slack, with the secrets the app runs
with). Bodies may hold placeholders, expanded when the case runs: {now}, {now_ms}, {now_iso},
{nest:N} (N nested arrays), {digits:N} (an N-digit integer), {x:N} (N x's) and {labels:N}
(N long labels). `token_claims` makes a signed one-click rollback token of those claims;
`alertmanager_group` an Alertmanager webhook with that many alerts.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.intake import signatures
from tests.fuzz.hostile import FuzzRequest, Secrets, alert_template, problem_named

CORPUS = sorted(Path(__file__).parent.joinpath("corpus").glob("*.json"))
CASES = [case for path in CORPUS for case in json.loads(path.read_text())]

pytestmark = pytest.mark.e2e


def expand(text: str, now: float) -> str:
    def replace(match: re.Match) -> str:
        name, _, count = match.group(1).partition(":")
        n = int(count or 0)
        return {
            "now": lambda: str(int(now)),
            "now_ms": lambda: str(int(now * 1000)),
            "now_iso": lambda: datetime.fromtimestamp(now, tz=UTC).isoformat(),
            "nest": lambda: "[" * n + "]" * n,
            "digits": lambda: "1" + "0" * (n - 1),
            "x": lambda: "x" * n,
            "labels": lambda: json.dumps({f"k{i}" + "k" * 600: "v" * 600 for i in range(n)}),
        }[name]()

    return re.sub(r"\{(now|now_ms|now_iso|nest:\d+|digits:\d+|x:\d+|labels:\d+)\}", replace, text)


def signed_token(secret: str, claims: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signature = hmac.new(secret.encode(), b"gatehouse-rollback-v1." + claims,
                         hashlib.sha256).digest()
    return f"{b64(claims)}.{b64(signature)}"


def build(case: dict, secrets: Secrets, now: float) -> FuzzRequest:
    if "body_hex" in case:
        body = bytes.fromhex(case["body_hex"])
    elif "alertmanager_group" in case:
        group = alert_template("alertmanager", now)
        group["alerts"] = [copy.deepcopy(group["alerts"][0]) | {"fingerprint": f"f{i}"}
                           for i in range(case["alertmanager_group"])]
        body = json.dumps(group).encode()
    else:
        body = expand(case.get("body", ""), now).encode()
    headers = {"Content-Type": case.get("content_type", "application/json"),
               **{name: expand(value, now) for name, value in case.get("headers", {}).items()}}
    sign = case.get("sign")
    if sign in ("mlflow", "forwarded"):
        names = signatures.MLFLOW_HEADERS if sign == "mlflow" else signatures.GATEHOUSE_HEADERS
        headers |= signatures.signed_headers(secrets.webhook, f"corpus-{time.time_ns()}",
                                             int(now), body, names)
    elif sign == "databricks":
        headers[signatures.DATABRICKS_SIGNATURE] = signatures.databricks_signature(
            secrets.webhook, body)
    elif sign == "slack":
        digest = hmac.new(secrets.slack.encode(), f"v0:{int(now)}:".encode() + body,
                          hashlib.sha256).hexdigest()
        headers |= {"X-Slack-Request-Timestamp": str(int(now)), "X-Slack-Signature": f"v0={digest}"}
    params = {}
    if "token_claims" in case:
        params["token"] = signed_token(secrets.link, expand(case["token_claims"], now).encode())
    return FuzzRequest(case["function"], case.get("method", "GET" if "token_claims" in case
                                                  else "POST"),
                       case.get("route_params", {}), params=params, headers=headers, body=body)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_a_known_crasher_gets_the_right_answer(fuzz_app, fuzz_secrets, case):
    status, content_type, body = fuzz_app(build(case, fuzz_secrets, time.time()))
    expected = case["status"] if isinstance(case["status"], list) else [case["status"]]
    assert status in expected, body[:500]
    if case.get("error"):
        assert case["error"] in json.loads(body)["error"], body[:500]
    if status >= 400:
        assert problem_named(status, content_type, body) is None


def test_a_non_utf8_slack_body_is_a_400_even_without_a_signing_secret():
    from functions.slack_actions import _act

    def no_bus():
        raise AssertionError("nothing may be published")

    reply = _act({"X-Slack-Signature": "v0=00", "X-Slack-Request-Timestamp": "1"},
                 b"\xff\xfepayload=", "", no_bus)
    assert reply.status == 400 and "not UTF-8" in reply.body["error"]
