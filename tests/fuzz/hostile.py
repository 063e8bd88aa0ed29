"""Hostile requests for every HTTP route of the Function App, from a `random.Random`.

Shared by the hypothesis fuzz test (which hands in a Random it controls, so failures replay) and
`tests/benchmarks/bench_fuzz.py` (which fires thousands over the local host). A request starts
from a valid body for its route and is damaged: hostile leaves (NaN, 400-digit numbers, lone
surrogates, deep nesting, huge strings, wrong types), dropped and added keys, or replaced whole by
random bytes or a hostile document. Signed routes are signed correctly about half the time (the
secrets are the ones the app under test runs with), so the parsers behind authentication are
reached too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from shared.intake import signatures

SAMPLES = Path(__file__).resolve().parent.parent / "monitoring" / "samples"
ALERT_SOURCES = ("azure-monitor", "alertmanager", "databricks-sql", "gatehouse")


@dataclass(frozen=True)
class Secrets:
    """The secrets the app under test is configured with (the fuzzer signs with them)."""

    webhook: str = "fuzz-webhook-secret-0123456789"
    slack: str = "fuzz-slack-signing-secret-0123456789"
    link: str = "fuzz-rollback-link-secret-0123456789"

    def environment(self) -> dict[str, str]:
        return {"GATEHOUSE_MLFLOW_WEBHOOK_SECRET": self.webhook,
                "GATEHOUSE_DATABRICKS_WEBHOOK_SECRET": self.webhook,
                "GATEHOUSE_FORWARDER_SECRET": self.webhook,
                "SLACK_SIGNING_SECRET": self.slack,
                "GATEHOUSE_ROLLBACK_LINK_SECRET": self.link}


@dataclass
class FuzzRequest:
    function: str                       # the app's function name
    method: str
    route_params: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def wire_headers(self) -> dict[str, str]:
        """The headers as HTTP carries them: ISO-8859-1 (other text goes as its UTF-8 bytes)."""
        def latin1(value: str) -> str:
            try:
                value.encode("latin-1")
                return value
            except UnicodeEncodeError:
                return value.encode("utf-8", "replace").decode("latin-1")

        return {latin1(name): latin1(value) for name, value in self.headers.items()}

    def path(self, template: str) -> str:
        """The URL path and query: route params filled in (percent-encoded) and the params."""
        path = "/api/" + template
        for name, value in self.route_params.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        return path + (f"?{urlencode(self.params)}" if self.params else "")


class Raw(str):
    """A JSON token written as is (NaN, 1e999, a 400-digit number, "\\ud800", deep nesting)."""


# ---- hostile values ---------------------------------------------------------------------------

def hostile_text(rnd: random.Random, size: int | None = None) -> str:
    pools = ["abcxyz-_.", "0123456789", " \t\r\n", "\x00\x01\x1f\x7f", "éüßÀÿ", "中文字符",
             "😀🚀", "\u202e\ufeff\u200b", "%/\\?#&=+;:\"'<>{}[]", "\ufffd"]
    length = size if size is not None else rnd.choice([0, 1, 2, 8, 40, 300])
    return "".join(rnd.choice(rnd.choice(pools)) for _ in range(length))


def latin1_text(rnd: random.Random, size: int | None = None) -> str:
    """What a header value can carry on the wire (the host decodes headers as ISO-8859-1)."""
    length = size if size is not None else rnd.choice([0, 1, 5, 40, 200])
    pool = "abcxyzABC019 -_.,;:=/+\"'\t" + "éÿ\xa0\xff" + "%"
    return "".join(rnd.choice(pool) for _ in range(length))


def nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


def hostile_value(rnd: random.Random) -> Any:
    choices: list[Any] = [
        None, True, False, 0, -1, 1, 2**31, 2**63, -2**63 - 1, 10**30, 1.5, -0.0, 1e308, 5e-324,
        Raw("1" + "0" * 400), Raw("-" + "9" * 101), Raw("NaN"), Raw("Infinity"),
        Raw("-Infinity"), Raw("1e999"), Raw("-1e999"), Raw('"\\ud800"'), Raw('"\\udfff x"'),
        Raw('"\\u0000"'), "", " ", "\x00", "😀", "NaN", "1e999", "9" * 400, "true", "null",
        "../../etc/passwd", "<script>alert(1)</script>", "2025-13-45T99:99:99Z",
        "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "+275760-09-13T00:00:00Z",
        10**18, -10**18, [], {}, nested(rnd.choice([10, 63, 64, 65, 200, 3000])),
    ]
    pick = rnd.random()
    if pick < 0.7:
        return rnd.choice(choices)
    if pick < 0.8:
        return hostile_text(rnd)
    if pick < 0.85:
        return "x" * rnd.choice([1000, 70_000, 300_000])
    if pick < 0.92:
        return [hostile_value(rnd) for _ in range(rnd.randint(0, 3))]
    return {hostile_text(rnd, rnd.randint(0, 12)): hostile_value(rnd)
            for _ in range(rnd.randint(0, 3))}


def to_json(document: Any, ascii_only: bool = True) -> str:
    """JSON text of `document`, with its Raw values written as is."""
    raws: list[Raw] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value)
            return f"\x00raw{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mark(item) for item in value]
        return value

    text = json.dumps(mark(document), ensure_ascii=ascii_only)
    for index, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\x00raw{index}\x00"), raw)
    return text


def _paths(document: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _set(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return document


def mutated(template: Any, rnd: random.Random) -> Any:
    """The template with one to three hostile changes."""
    document = deepcopy(template)
    for _ in range(rnd.randint(1, 3)):
        paths = _paths(document)
        path = rnd.choice(paths)
        action = rnd.random()
        target = document
        for step in path[:-1] if path else ():
            target = target[step]
        if path and action < 0.15 and isinstance(target, dict):
            target.pop(path[-1], None)                                   # drop a key
        elif path and action < 0.25 and isinstance(target, dict):
            target[hostile_text(rnd, rnd.randint(0, 20))] = hostile_value(rnd)  # add one
        else:
            document = _set(document, path, hostile_value(rnd))
    return document


def hostile_document(rnd: random.Random) -> bytes:
    """A whole body that is no document at all, or a hostile one."""
    choices = [b"", b" ", b"null", b"[]", b"{}", b'"text"', b"0", b"NaN", b"[NaN]",
               b"\xef\xbb\xbf{}", b"\xff\xfe\x00", b'{"a": "\\ud800"}', b"[" * 100_000,
               b'{"a": ' * 50_000,
               ("[" * 65 + "]" * 65).encode(), ("1" + "0" * 5000).encode(), b"{" * 3 + b"}",
               b'{"a": 1e999}', b'{"a": -Infinity}', b"\x00" * 64, "é".encode("latin-1"),
               b"payload=%7B%7D", b"token=abc"]
    if rnd.random() < 0.5:
        return rnd.choice(choices)
    return rnd.randbytes(rnd.choice([1, 16, 300, 5000]))


def body_from(template: Any, rnd: random.Random) -> bytes:
    pick = rnd.random()
    if pick < 0.12:
        return hostile_document(rnd)
    if pick < 0.25:
        return to_json(template).encode()
    return to_json(mutated(template, rnd), ascii_only=rnd.random() < 0.5).encode()


# ---- valid starting points ----------------------------------------------------------------------

def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=UTC).isoformat().replace("+00:00", "Z")


def mlflow_template(now: float) -> dict:
    return {"entity": "model_version", "action": "created", "timestamp": _iso(now),
            "data": {"name": "fuzz-model", "version": "1", "source": "models:/m/1", "run_id": "r1",
                     "tags": {"k": "v"}, "description": None}}


def databricks_template(now: float, rnd: random.Random) -> dict:
    event = rnd.choice(["MODEL_VERSION_CREATED", "MODEL_VERSION_TRANSITIONED_STAGE",
                        "TRANSITION_REQUEST_CREATED", "COMMENT_CREATED", "MODEL_VERSION_TAG_SET",
                        "REGISTERED_MODEL_CREATED", "MODEL_VERSION_TRANSITIONED_TO_PRODUCTION"])
    return {"event": event, "webhook_id": "w1", "event_timestamp": int(now * 1000),
            "model_name": "fuzz-model", "version": "1", "from_stage": "None",
            "to_stage": "Staging", "comment": "c", "tags": [{"key": "k", "value": "v"}],
            "text": "t"}


def forwarded_template(now: float) -> dict:
    from shared.events import Envelope, ModelVersionCreated

    envelope = Envelope.wrap(ModelVersionCreated(model_name="fuzz-model", version="1",
                                                 registry="unity-catalog"),
                             source="/gatehouse/databricks/model-update-trigger",
                             dedupe_key="fuzz", time=datetime.fromtimestamp(now, tz=UTC))
    return json.loads(envelope.to_json())


def alert_template(source: str, now: float) -> dict:
    if source == "gatehouse":
        return {"schema": "gatehouse.monitor.alerts/v1", "alerts": [{
            "alert_kind": "feature_drift", "status": "firing", "severity": "warning",
            "title": "PSI 0.31", "model_name": "fuzz-model", "version": "3",
            "endpoint": "fuzz-prod", "figures": {"feature_psi": 0.31},
            "labels": {"metric": "feature_psi"}, "starts_at": _iso(now), "at": _iso(now)}]}
    sample = {"azure-monitor": "azure_monitor_common_schema_sample.json",
              "alertmanager": "alertmanager_model_group.json",
              "databricks-sql": "databricks_sql_alert_triggered.json"}[source]
    return json.loads((SAMPLES / sample).read_text())


def slack_payload(rnd: random.Random) -> dict:
    target = {"model": "fuzz-model", "version": "2", "endpoint": "fuzz-prod", "registry": "mlflow"}
    value = to_json(mutated(target, rnd)) if rnd.random() < 0.3 else json.dumps(target)
    return {"type": "block_actions", "user": {"id": "U1", "username": "ana"},
            "actions": [{"action_id": rnd.choice(["gatehouse_rollback", "gatehouse_open_mlflow"]),
                         "value": value, "action_ts": str(time.time())}],
            "container": {"channel_id": "C1", "message_ts": "1.2"}, "channel": {"id": "C1"}}


# ---- headers --------------------------------------------------------------------------------

def content_type(rnd: random.Random, usual: str = "application/json") -> dict[str, str]:
    pick = rnd.random()
    if pick < 0.6:
        return {"Content-Type": usual}
    if pick < 0.7:
        return {}
    return {"Content-Type": rnd.choice(["text/plain", "", "application/json; charset=latin-1",
                                        "application/x-www-form-urlencoded", "*/*", ";;;",
                                        "application/cloudevents+json", latin1_text(rnd)])}


def hostile_timestamp(rnd: random.Random, now: float) -> str:
    return rnd.choice([str(int(now)), str(int(now) - 10_000), str(int(now) + 10_000), "0", "-1",
                       "1" * 20, "abc", "١٢٣".encode().decode("latin-1"), "", " ", str(now),
                       latin1_text(rnd, 8)])


def mlflow_signed(secret: str, body: bytes, rnd: random.Random, now: float,
                  names: tuple[str, str, str]) -> dict[str, str]:
    delivery = ("d-" + str(rnd.getrandbits(48)) if rnd.random() < 0.8
                else rnd.choice(["x" * 200, "bad id", "é", ""]))
    if rnd.random() < 0.75 and delivery.startswith("d-"):
        return signatures.signed_headers(secret, delivery, int(now), body, names)
    signature_name, timestamp_name, delivery_name = names
    return {delivery_name: delivery, timestamp_name: hostile_timestamp(rnd, now),
            signature_name: rnd.choice(["v1," + base64.b64encode(rnd.randbytes(32)).decode(),
                                        "v1,!!!", "v2,abc", "", latin1_text(rnd)])}


def databricks_signed(secret: str, body: bytes, rnd: random.Random) -> dict[str, str]:
    if rnd.random() < 0.75:
        return {signatures.DATABRICKS_SIGNATURE: signatures.databricks_signature(secret, body)}
    return {signatures.DATABRICKS_SIGNATURE: rnd.choice(["", "0" * 64, latin1_text(rnd)])}


def slack_signed(secret: str, body: bytes, rnd: random.Random, now: float) -> dict[str, str]:
    stamp = str(int(now))
    if rnd.random() < 0.6:
        digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body,
                          hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}
    return {"X-Slack-Request-Timestamp": hostile_timestamp(rnd, now),
            "X-Slack-Signature": rnd.choice(["v0=" + "0" * 64, "", "v0=é", latin1_text(rnd)])}


def noise_headers(rnd: random.Random) -> dict[str, str]:
    names = ["Accept", "Authorization", "X-Gatehouse-Alert-Token", "X-Request-Id", "Cookie",
             "X-Forwarded-For", "User-Agent", "X-Functions-Key"]
    headers = {}
    for _ in range(rnd.randint(0, 3)):
        name = rnd.choice(names)
        headers[name] = rnd.choice([latin1_text(rnd), "text/html", "Bearer " + latin1_text(rnd),
                                    "Bearer", ""])
    return headers


# ---- one request per route ------------------------------------------------------------------

def route_text(rnd: random.Random, usual: str) -> str:
    pick = rnd.random()
    if pick < 0.4:
        return usual
    if pick < 0.5:
        return usual + "/" + usual
    return hostile_text(rnd, rnd.choice([1, 3, 20, 300])) or "x"


def link_token(secrets: Secrets, rnd: random.Random, now: float) -> str:
    pick = rnd.random()
    if pick < 0.3:
        return rnd.choice(["", "a.b", "...", "x" * 3000, hostile_text(rnd, 30), "a" * 40 + ".b"])
    claims: Any = {"v": 1, "e": "fuzz-prod", "r": "r-1", "x": int(now + 3600), "n": "nonce"}
    if pick < 0.85:
        claims = mutated(claims, rnd)
    text = to_json(claims).encode()
    signature = hmac.new(secrets.link.encode(), b"gatehouse-rollback-v1." + text,
                         hashlib.sha256).digest()
    if rnd.random() < 0.2:
        signature = rnd.randbytes(32)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    return f"{b64(text)}.{b64(signature)}"


def fuzz_request(function: str, rnd: random.Random, secrets: Secrets,
                 now: float | None = None) -> FuzzRequest:
    now = time.time() if now is None else now
    builder = BUILDERS[function]
    request = builder(rnd, secrets, now)
    request.headers = {**noise_headers(rnd), **request.headers}
    if rnd.random() < 0.1:
        request.params[hostile_text(rnd, 5) or "p"] = hostile_text(rnd, 20)
    return request


def _mlflow(rnd, secrets, now) -> FuzzRequest:
    body = body_from(mlflow_template(now), rnd)
    headers = {**content_type(rnd), **mlflow_signed(secrets.webhook, body, rnd, now,
                                                    signatures.MLFLOW_HEADERS)}
    return FuzzRequest("mlflow_registry_webhook", "POST", {}, headers=headers, body=body)


def _databricks(rnd, secrets, now) -> FuzzRequest:
    template = databricks_template(now, rnd)
    if rnd.random() < 0.1:
        template["event_timestamp"] = rnd.choice([10**18, 0, -5, int(now * 1000) - 10**9])
    body = body_from(template, rnd)
    headers = {**content_type(rnd), **databricks_signed(secrets.webhook, body, rnd)}
    return FuzzRequest("databricks_registry_webhook", "POST", {}, headers=headers, body=body)


def _forwarded(rnd, secrets, now) -> FuzzRequest:
    body = body_from(forwarded_template(now), rnd)
    headers = {**content_type(rnd), **mlflow_signed(secrets.webhook, body, rnd, now,
                                                    signatures.GATEHOUSE_HEADERS)}
    return FuzzRequest("forwarded_registry_event", "POST", {}, headers=headers, body=body)


def _health(rnd, secrets, now) -> FuzzRequest:
    return FuzzRequest("health", "GET", {}, body=hostile_document(rnd) if rnd.random() < 0.2
                       else b"")


def _rerun(rnd, secrets, now) -> FuzzRequest:
    version = rnd.choice(["1", "2", "0", "-1", "1" * 30, "99999999999999999999", "١",
                          hostile_text(rnd, 4) or "x"])
    template = {"rerun_id": "rerun-1", "requested_by": "ana", "reason": "fuzz"}
    body = b"" if rnd.random() < 0.2 else body_from(template, rnd)
    return FuzzRequest("request_rerun", "POST",
                       {"model": route_text(rnd, "fuzz-model"), "version": version},
                       headers=content_type(rnd), body=body)


def _ramp(rnd, secrets, now) -> FuzzRequest:
    return FuzzRequest("ramp_endpoint", "POST", {"endpoint": route_text(rnd, "fuzz-prod")},
                       body=hostile_document(rnd) if rnd.random() < 0.2 else b"")


def _rollback(rnd, secrets, now) -> FuzzRequest:
    body = body_from({"actor": "ana", "reason": "fuzz"}, rnd)
    return FuzzRequest("rollback_endpoint", "POST", {"endpoint": route_text(rnd, "fuzz-prod")},
                       headers=content_type(rnd), body=body)


def _link(rnd, secrets, now) -> FuzzRequest:
    token = link_token(secrets, rnd, now)
    method = rnd.choice(["GET", "POST"])
    params: dict[str, str] = {}
    body = b""
    if method == "POST" and rnd.random() < 0.5:
        body = rnd.choice([f"token={quote(token)}".encode(), hostile_document(rnd)])
    else:
        params["token"] = token
    headers = {"Accept": "text/html"} if rnd.random() < 0.3 else {}
    return FuzzRequest("rollback_link", method, {}, params=params, headers=headers, body=body)


def _list(rnd, secrets, now) -> FuzzRequest:
    return FuzzRequest("list_rollouts", "GET", {}, body=b"")


def _get(rnd, secrets, now) -> FuzzRequest:
    return FuzzRequest("get_rollout", "GET", {"endpoint": route_text(rnd, "fuzz-prod")})


def _slack(rnd, secrets, now) -> FuzzRequest:
    pick = rnd.random()
    if pick < 0.15:
        body = hostile_document(rnd)
    else:
        payload = to_json(mutated(slack_payload(rnd), rnd) if pick < 0.8 else slack_payload(rnd))
        body = b"payload=" + quote(payload).encode()
    headers = {**content_type(rnd, "application/x-www-form-urlencoded"),
               **slack_signed(secrets.slack, body, rnd, now)}
    return FuzzRequest("slack_actions", "POST", {}, headers=headers, body=body)


def _alert(rnd, secrets, now) -> FuzzRequest:
    source = rnd.choice(ALERT_SOURCES) if rnd.random() < 0.9 else route_text(rnd, "mlflow")
    template = alert_template(source if source in ALERT_SOURCES else "gatehouse", now)
    if rnd.random() < 0.05 and isinstance(template.get("alerts"), list):
        template["alerts"] = template["alerts"] * 101          # over the per-request cap
    body = body_from(template, rnd)
    return FuzzRequest("receive_alert", "POST", {"source": source}, headers=content_type(rnd),
                       body=body)


def _monitor_run(rnd, secrets, now) -> FuzzRequest:
    body = b"" if rnd.random() < 0.1 else body_from({"now": now}, rnd)
    return FuzzRequest("monitor_now", "POST", {}, headers=content_type(rnd), body=body)


def _labels(rnd, secrets, now) -> FuzzRequest:
    template = {"labels": {f"req-{rnd.getrandbits(32)}": 1, "req-b": 0, "req-c": 0.25}}
    return FuzzRequest("receive_labels", "POST", {"endpoint": route_text(rnd, "fuzz-prod")},
                       headers=content_type(rnd), body=body_from(template, rnd))


def _status(rnd, secrets, now) -> FuzzRequest:
    params = {"code": route_text(rnd, "key")} if rnd.random() < 0.5 else {}
    return FuzzRequest("status_page", "GET", {}, params=params, body=b"")


def _diagram(rnd, secrets, now) -> FuzzRequest:
    run_id = rnd.getrandbits(128).to_bytes(16, "big").hex()
    return FuzzRequest("status_diagram", "GET", {
        "run_id": route_text(rnd, run_id), "artifact": route_text(rnd, "reliability.png")})


BUILDERS = {
    "mlflow_registry_webhook": _mlflow, "databricks_registry_webhook": _databricks,
    "forwarded_registry_event": _forwarded, "health": _health, "request_rerun": _rerun,
    "ramp_endpoint": _ramp, "rollback_endpoint": _rollback, "rollback_link": _link,
    "list_rollouts": _list, "get_rollout": _get, "slack_actions": _slack,
    "receive_alert": _alert, "monitor_now": _monitor_run, "receive_labels": _labels,
    "status_page": _status, "status_diagram": _diagram,
}


def problem_named(status: int, content_type: str, body: bytes) -> str | None:
    """What is wrong with a 4xx answer (None: fine): it must say, in JSON, what the problem is
    (the one-click rollback link answers browsers with an HTML page instead)."""
    if content_type.startswith("text/html"):
        return None if body.strip() else "an empty HTML page"
    try:
        answer = json.loads(body)
    except ValueError:
        return f"a {status} whose body is not JSON: {body[:200]!r}"
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, str) or not error.strip():
        return f"a {status} that names no problem: {body[:200]!r}"
    return None
