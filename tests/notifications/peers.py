"""Small local peers speaking the documented wire formats of Slack's Web API, PagerDuty's Events
API v2 and a Teams workflow webhook. They validate what they receive the way the real services do
and refuse anything malformed, so the real clients are tested against the real contract.

- Slack Web API (docs.slack.dev/reference/methods/chat.postMessage, chat.update): bearer token,
  JSON bodies, Block Kit limits; errors are HTTP 200 with `{"ok": false, "error": ...}`, rate
  limits are HTTP 429 with Retry-After.
- PagerDuty Events API v2 (developer.pagerduty.com, "Send an Alert Event"): HTTPS only,
  `POST /v2/enqueue`, 202 `{"status": "success", "message": "Event processed", "dedup_key"}`,
  400 `{"status": "invalid event", "message": ..., "errors": [...]}`.
- Teams workflow webhook: `POST .../workflows/<id>/triggers/manual/paths/invoke?...&sig=<sig>`,
  a message with Adaptive Card attachments; 202 Accepted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TEXT_TYPES = {"plain_text", "mrkdwn"}
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class Peer(ABC):
    """An HTTP(S) server on 127.0.0.1 in a thread; subclasses implement `handle`."""

    scheme = "http"

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.faults: deque[tuple[int, dict, bytes]] = deque()
        self._server: _Server | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        return None

    def start(self) -> Peer:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with peer.lock:
                    peer.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body, "at": time.monotonic()})
                    fault = peer.faults.popleft() if peer.faults else None
                if fault is not None:
                    status, headers, reply = fault
                else:
                    status, headers, reply = peer.handle(self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self):
                with peer.lock:
                    peer.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": b"", "at": time.monotonic()})
                    fault = peer.faults.popleft() if peer.faults else None
                reply = fault or peer.handle_get(self.path, self.headers)
                if reply is None:
                    return self._method_not_allowed()
                status, headers, body = reply
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_PUT = do_PATCH = do_DELETE = lambda self: self._method_not_allowed()

            def _method_not_allowed(self):
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = _Server(("127.0.0.1", 0), Handler)
        context = self.tls_context()
        if context is not None:
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def inject(self, status: int, times: int = 1, headers: dict | None = None,
               body: bytes = b"") -> None:
        """Answer the next `times` requests with this reply instead of handling them."""
        with self.lock:
            self.faults.extend([(status, headers or {}, body)] * times)

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    @abstractmethod
    def handle(self, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """(status, headers, body) for one POST."""

    def handle_get(self, path: str, headers) -> tuple[int, dict, bytes] | None:
        """(status, headers, body) for one GET; None: 405."""
        return None


def _json(status: int, body: dict, headers: dict | None = None) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json", **(headers or {})}, \
        json.dumps(body).encode()


# ---- Slack ----

def _text_problems(obj, where: str, limit: int, kinds=TEXT_TYPES) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in kinds:
        return [f"{where} must be a text object of type {sorted(kinds)}"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}.text must be a non-empty string"]
    if len(text) > limit:
        return [f"{where}.text is longer than {limit} characters"]
    return []


def block_problems(blocks) -> list[str]:
    """Block Kit's documented constraints for the block types Gatehouse sends."""
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return ["blocks must be a list of 1 to 50 blocks"]
    problems: list[str] = []
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            problems += _text_problems(block.get("text"), f"{where}.text", 150, {"plain_text"})
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where} needs text or fields")
            if "text" in block:
                problems += _text_problems(block["text"], f"{where}.text", 3000)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    problems.append(f"{where}.fields must hold 1 to 10 text objects")
                else:
                    for j, item in enumerate(fields):
                        problems += _text_problems(item, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}.elements must hold 1 to 10 elements")
            else:
                for j, item in enumerate(elements):
                    problems += _text_problems(item, f"{where}.elements[{j}]", 3000)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                problems.append(f"{where}.elements must hold 1 to 25 elements")
                continue
            for j, button in enumerate(elements):
                at = f"{where}.elements[{j}]"
                if not isinstance(button, dict) or button.get("type") != "button":
                    problems.append(f"{at} must be a button")
                    continue
                problems += _text_problems(button.get("text"), f"{at}.text", 75, {"plain_text"})
                action_id = button.get("action_id")
                if not isinstance(action_id, str) or not 0 < len(action_id) <= 255:
                    problems.append(f"{at}.action_id must be 1 to 255 characters")
                elif action_id in action_ids:
                    problems.append(f"{at}.action_id {action_id!r} is not unique")
                else:
                    action_ids.add(action_id)
                if "value" in button and (not isinstance(button["value"], str)
                                          or len(button["value"]) > 2000):
                    problems.append(f"{at}.value must be a string of at most 2000 characters")
                if "url" in button and (not isinstance(button["url"], str)
                                        or not button["url"].startswith(("http://", "https://"))
                                        or len(button["url"]) > 3000):
                    problems.append(f"{at}.url must be an http(s) URL of at most 3000 characters")
                if button.get("style") not in (None, "primary", "danger"):
                    problems.append(f"{at}.style must be primary or danger")
                confirm = button.get("confirm")
                if confirm is not None:
                    problems += _text_problems(confirm.get("title"), f"{at}.confirm.title", 100,
                                               {"plain_text"})
                    problems += _text_problems(confirm.get("text"), f"{at}.confirm.text", 300)
                    problems += _text_problems(confirm.get("confirm"), f"{at}.confirm.confirm",
                                               30, {"plain_text"})
                    problems += _text_problems(confirm.get("deny"), f"{at}.confirm.deny", 30,
                                               {"plain_text"})
        else:
            problems.append(f"{where}.type {kind!r} is not a block type Gatehouse sends")
    return problems


READ_METHODS = ("conversations.history", "conversations.replies")


def metadata_problems(metadata) -> list[str]:
    """Slack's message metadata: an alphanumeric `event_type` and an object `event_payload`."""
    if not isinstance(metadata, dict):
        return ["metadata is not an object"]
    problems = []
    event_type = metadata.get("event_type")
    if not isinstance(event_type, str) or not event_type.replace("_", "").isalnum():
        problems.append("metadata.event_type must be an alphanumeric string")
    if not isinstance(metadata.get("event_payload"), dict):
        problems.append("metadata.event_payload must be an object")
    return problems


class SlackPeer(Peer):
    """chat.postMessage and chat.update of Slack's Web API (POST, JSON), and
    conversations.history and conversations.replies (GET, query string; the channel by ID only,
    and only with the history scope), for one bot token and one channel."""

    def __init__(self, token: str, channel_name: str, channel_id: str = "C0GATEHOUSE",
                 history_scope: bool = True):
        super().__init__()
        self.token = token
        self.channel_name = channel_name
        self.channel_id = channel_id
        self.history_scope = history_scope
        self.messages: dict[str, dict] = {}
        self._clock = time.time()  # Slack message ts are epoch seconds

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def rate_limit(self, times: int, retry_after: int) -> None:
        self.inject(429, times, {"Retry-After": str(retry_after),
                                 "Content-Type": "application/json"},
                    json.dumps({"ok": False, "error": "ratelimited"}).encode())

    def calls(self, method: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == f"/api/{method}"]

    def roots(self) -> list[dict]:
        with self.lock:
            return [m for m in self.messages.values() if not m.get("thread_ts")]

    def replies(self, root_ts: str) -> list[dict]:
        with self.lock:
            return [m for m in self.messages.values() if m.get("thread_ts") == root_ts]

    def _next_ts(self) -> str:
        self._clock = max(time.time(), self._clock + 0.000_1)
        return f"{self._clock:.6f}"

    def handle(self, path, headers, body):
        method = path.split("?")[0].removeprefix("/api/")
        auth = headers.get("Authorization", "")
        if not auth:
            return _json(200, {"ok": False, "error": "not_authed"})
        if auth != f"Bearer {self.token}":
            return _json(200, {"ok": False, "error": "invalid_auth"})
        if method in READ_METHODS:  # slack-sdk sends these form-encoded
            from urllib.parse import parse_qs

            form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
            return self._read(method, form)
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            return _json(200, {"ok": False, "error": "invalid_form_data"})
        try:
            args = json.loads(body)
        except ValueError:
            return _json(200, {"ok": False, "error": "invalid_json"})
        if not isinstance(args, dict):
            return _json(200, {"ok": False, "error": "invalid_json"})
        if args.get("channel") not in (self.channel_name, self.channel_id):
            return _json(200, {"ok": False, "error": "channel_not_found"})
        if not args.get("text") and not args.get("blocks"):
            return _json(200, {"ok": False, "error": "no_text"})
        if "blocks" in args:
            problems = block_problems(args["blocks"])
            if problems:
                return _json(200, {"ok": False, "error": "invalid_blocks", "errors": problems})
        if "metadata" in args and metadata_problems(args["metadata"]):
            return _json(200, {"ok": False, "error": "invalid_metadata",
                               "errors": metadata_problems(args["metadata"])})
        with self.lock:
            if method == "chat.postMessage":
                return self._post(args)
            if method == "chat.update":
                return self._update(args)
        return _json(200, {"ok": False, "error": "unknown_method"})

    def _post(self, args: dict):
        thread_ts = args.get("thread_ts")
        if thread_ts is not None:
            parent = self.messages.get(thread_ts)
            if parent is None or parent.get("thread_ts"):
                return _json(200, {"ok": False, "error": "thread_not_found"})
        ts = self._next_ts()
        message = {"ts": ts, "channel": self.channel_id, "text": args.get("text", ""),
                   "blocks": args.get("blocks", []), "thread_ts": thread_ts, "history": [],
                   "metadata": args.get("metadata")}
        self.messages[ts] = message
        return _json(200, {"ok": True, "channel": self.channel_id, "ts": ts,
                           "message": {"type": "message", "text": message["text"],
                                       "ts": ts, "blocks": message["blocks"]}})

    def handle_get(self, path, headers):
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(path)
        method = parts.path.removeprefix("/api/")
        if method not in READ_METHODS:
            return None
        if headers.get("Authorization", "") != f"Bearer {self.token}":
            return _json(200, {"ok": False, "error": "invalid_auth"})
        return self._read(method, {k: v[-1] for k, v in parse_qs(parts.query).items()})

    def _read(self, method: str, query: dict):
        if not self.history_scope:
            return _json(200, {"ok": False, "error": "missing_scope",
                               "needed": "channels:history,groups:history"})
        if query.get("channel") != self.channel_id:  # a name is not enough for these methods
            return _json(200, {"ok": False, "error": "channel_not_found"})
        try:
            oldest = float(query.get("oldest") or 0)
            limit = int(query.get("limit") or 100)
        except ValueError:
            return _json(200, {"ok": False, "error": "invalid_arguments"})
        with self.lock:
            if method == "conversations.history":
                found = [m for m in self.messages.values() if not m.get("thread_ts")]
            else:
                parent = self.messages.get(query.get("ts") or "")
                if parent is None or parent.get("thread_ts"):
                    return _json(200, {"ok": False, "error": "thread_not_found"})
                found = [parent, *(m for m in self.messages.values()
                                     if m.get("thread_ts") == parent["ts"])]
            found = [m for m in found if float(m["ts"]) > oldest]
        if method == "conversations.history":
            found.sort(key=lambda m: float(m["ts"]), reverse=True)  # newest first
        with_metadata = query.get("include_all_metadata") in ("1", "true", "True")
        return _json(200, {"ok": True, "has_more": len(found) > limit, "messages": [
            {"type": "message", "ts": m["ts"], "text": m["text"],
             **({"thread_ts": m["thread_ts"]} if m.get("thread_ts") else {}),
             **({"metadata": m["metadata"]} if with_metadata and m.get("metadata") else {})}
            for m in found[:limit]]})

    def _update(self, args: dict):
        if args.get("channel") != self.channel_id:
            return _json(200, {"ok": False, "error": "channel_not_found"})
        message = self.messages.get(args.get("ts") or "")
        if message is None:
            return _json(200, {"ok": False, "error": "message_not_found"})
        message["history"].append({"text": message["text"], "blocks": message["blocks"]})
        message["text"] = args.get("text", message["text"])
        message["blocks"] = args.get("blocks", message["blocks"])
        return _json(200, {"ok": True, "channel": self.channel_id, "ts": message["ts"],
                           "text": message["text"]})


# ---- PagerDuty Events API v2 (HTTPS) ----

def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made at test time; the client trusts it as its CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "peer-cert.pem", directory / "peer-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


PD_ACTIONS = ("trigger", "acknowledge", "resolve")
PD_SEVERITIES = ("critical", "error", "warning", "info")
PD_FIELDS = {"routing_key", "event_action", "dedup_key", "payload", "images", "links", "client",
             "client_url"}
PD_PAYLOAD_FIELDS = {"summary", "source", "severity", "timestamp", "component", "group", "class",
                     "custom_details"}


def pagerduty_problems(event, routing_key: str) -> list[str]:
    if not isinstance(event, dict):
        return ["the event must be a JSON object"]
    problems = [f"unknown field '{k}'" for k in event if k not in PD_FIELDS]
    key = event.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        problems.append("Length of 'routing_key' is incorrect (should be 32 characters)")
    elif key != routing_key:
        problems.append("'routing_key' is not the key of any integration")
    action = event.get("event_action")
    if action not in PD_ACTIONS:
        problems.append("'event_action' must be one of trigger, acknowledge, resolve")
    dedup = event.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or not 0 < len(dedup) <= 255):
        problems.append("'dedup_key' must be a string of 1 to 255 characters")
    if action in ("acknowledge", "resolve") and dedup is None:
        problems.append(f"'dedup_key' is required for {action}")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return problems + ["'payload' is missing or not an object"]
        problems += [f"unknown field 'payload.{k}'" for k in payload if k not in PD_PAYLOAD_FIELDS]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not 0 < len(summary) <= 1024:
            problems.append("'payload.summary' must be a string of 1 to 1024 characters")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("'payload.source' is missing")
        if payload.get("severity") not in PD_SEVERITIES:
            problems.append("'payload.severity' must be critical, error, warning or info")
        if "timestamp" in payload:
            try:
                dt.datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
            except ValueError:
                problems.append("'payload.timestamp' is not ISO 8601")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            problems.append("'payload.custom_details' must be an object")
        for link in event.get("links", []):
            if not isinstance(link, dict) or not isinstance(link.get("href"), str):
                problems.append("every link needs an 'href'")
    return problems


class PagerDutyPeer(Peer):
    """`POST /v2/enqueue` over HTTPS, keeping alerts by dedup key the way PagerDuty does."""

    scheme = "https"

    def __init__(self, routing_key: str, cert: Path, key: Path):
        super().__init__()
        self.routing_key = routing_key
        self.cert, self.key = cert, key
        self.events: list[dict] = []
        self.incidents: list[dict] = []  # every alert ever opened, in order

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def open_incident(self, dedup_key: str) -> dict | None:
        return next((i for i in self.incidents
                     if i["dedup_key"] == dedup_key and i["status"] == "triggered"), None)

    def incidents_for(self, prefix: str) -> list[dict]:
        with self.lock:
            return [i for i in self.incidents if i["dedup_key"].startswith(prefix)]

    def handle(self, path, headers, body):
        if path != "/v2/enqueue":
            return _json(404, {"status": "not found", "message": f"no route {path}"})
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            return _json(400, {"status": "invalid event", "message": "Content-Type must be "
                                                                     "application/json"})
        try:
            event = json.loads(body)
        except ValueError:
            return _json(400, {"status": "invalid event", "message": "Event object is invalid",
                               "errors": ["the body is not JSON"]})
        problems = pagerduty_problems(event, self.routing_key)
        if problems:
            return _json(400, {"status": "invalid event", "message": "Event object is invalid",
                               "errors": problems})
        dedup_key = event.get("dedup_key") or uuid.uuid4().hex
        with self.lock:
            self.events.append(event)
            incident = self.open_incident(dedup_key)
            if event["event_action"] == "trigger":
                if incident is None:
                    self.incidents.append({"dedup_key": dedup_key, "status": "triggered",
                                           "summary": event["payload"]["summary"],
                                           "severity": event["payload"]["severity"],
                                           "triggers": 1})
                else:
                    incident["triggers"] += 1
            elif incident is not None:  # acknowledge/resolve of no open alert is dropped
                incident["status"] = ("resolved" if event["event_action"] == "resolve"
                                      else "acknowledged")
        return _json(202, {"status": "success", "message": "Event processed",
                           "dedup_key": dedup_key})


# ---- Teams workflow webhook ----

CARD_ELEMENTS = {"TextBlock", "FactSet", "ColumnSet", "Container", "Image", "ActionSet"}


def card_problems(message) -> list[str]:
    if not isinstance(message, dict) or message.get("type") != "message":
        return ["the body must be an object with type 'message'"]
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return ["'attachments' must be a non-empty list"]
    problems = []
    for i, attachment in enumerate(attachments):
        where = f"attachments[{i}]"
        if attachment.get("contentType") != ADAPTIVE_CARD:
            problems.append(f"{where}.contentType must be {ADAPTIVE_CARD}")
            continue
        card = attachment.get("content")
        if not isinstance(card, dict) or card.get("type") != "AdaptiveCard":
            problems.append(f"{where}.content.type must be AdaptiveCard")
            continue
        if card.get("version") not in ("1.0", "1.1", "1.2", "1.3", "1.4", "1.5"):
            problems.append(f"{where}.content.version must be 1.0 to 1.5")
        body = card.get("body")
        if not isinstance(body, list) or not body:
            problems.append(f"{where}.content.body must be a non-empty list")
            continue
        for j, element in enumerate(body):
            at = f"{where}.content.body[{j}]"
            kind = element.get("type") if isinstance(element, dict) else None
            if kind not in CARD_ELEMENTS:
                problems.append(f"{at}.type {kind!r} is not an Adaptive Card element")
            elif kind == "TextBlock" and (not isinstance(element.get("text"), str)
                                          or not element["text"]):
                problems.append(f"{at}.text must be a non-empty string")
            elif kind == "FactSet":
                facts = element.get("facts")
                if not isinstance(facts, list) or not all(
                        isinstance(f, dict) and isinstance(f.get("title"), str)
                        and isinstance(f.get("value"), str) for f in facts):
                    problems.append(f"{at}.facts must be a list of {{title, value}} strings")
        for j, action in enumerate(card.get("actions", [])):
            at = f"{where}.content.actions[{j}]"
            if action.get("type") != "Action.OpenUrl":
                problems.append(f"{at}.type must be Action.OpenUrl")
            elif not str(action.get("url", "")).startswith(("http://", "https://")):
                problems.append(f"{at}.url must be an http(s) URL")
            if not isinstance(action.get("title"), str) or not action["title"]:
                problems.append(f"{at}.title is required")
            if action.get("style") not in (None, "default", "positive", "destructive"):
                problems.append(f"{at}.style must be default, positive or destructive")
    return problems


class TeamsPeer(Peer):
    """A Teams workflow's HTTP trigger: checks the URL signature, takes Adaptive Card messages."""

    def __init__(self, signature: str):
        super().__init__()
        self.signature = signature
        self.workflow = uuid.uuid4().hex
        self.cards: list[dict] = []

    @property
    def webhook_url(self) -> str:
        return (f"{self.url}/workflows/{self.workflow}/triggers/manual/paths/invoke"
                f"?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0"
                f"&sig={self.signature}")

    def cards_about(self, text: str) -> list[dict]:
        with self.lock:
            return [c for c in self.cards if text in json.dumps(c)]

    def handle(self, path, headers, body):
        parts = urlsplit(path)
        if parts.path != f"/workflows/{self.workflow}/triggers/manual/paths/invoke":
            return _json(404, {"error": {"code": "WorkflowNotFound",
                                         "message": "The workflow was not found."}})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if query.get("api-version") != "2016-06-01" or query.get("sv") != "1.0":
            return _json(400, {"error": {"code": "InvalidRequest",
                                         "message": "api-version and sv are required"}})
        if query.get("sig") != self.signature:
            return _json(401, {"error": {"code": "DirectApiAuthorizationRequired",
                                         "message": "The request must be authenticated."}})
        if not (headers.get("Content-Type") or "").startswith("application/json"):
            return _json(415, {"error": {"code": "UnsupportedMediaType",
                                         "message": "send application/json"}})
        try:
            message = json.loads(body)
        except ValueError:
            return _json(400, {"error": {"code": "InvalidJSON", "message": "not JSON"}})
        problems = card_problems(message)
        if problems:
            return _json(400, {"error": {"code": "InvalidTemplate",
                                         "message": "; ".join(problems)}})
        with self.lock:
            self.cards.append(message)
        return 202, {}, b""
