"""Keeping the channels' secrets (tokens, routing keys, webhook URLs) out of logs and records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from urllib.parse import parse_qsl, urlsplit


def url_secrets(url: str) -> list[str]:
    """A webhook URL is a secret as a whole, and so are its path (what HTTP logs show) and
    its query values (the signature)."""
    parts = urlsplit(url)
    found = [url]
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if len(parts.path) > 1:
        found.append(path)
    found.extend(value for _, value in parse_qsl(parts.query) if len(value) >= 8)
    return found


def make_redactor(secrets: Collection[str]) -> Callable[[str], str]:
    ordered = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in ordered:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        return text
    return redact


_LOG_SECRETS: set[str] = set()
_factory_installed = False


def protect_logs(secrets: Collection[str]) -> None:
    """Mask these secrets in every log record of the process, whichever library logs it."""
    global _factory_installed
    _LOG_SECRETS.update(s for s in secrets if s and len(s) >= 6)
    if _factory_installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        if not _LOG_SECRETS:
            return record
        redact = make_redactor(_LOG_SECRETS)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record stays as it is; logging reports it
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
    _factory_installed = True
