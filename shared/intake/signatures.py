"""Webhook signature checks, constant-time.

- MLflow OSS: `X-MLflow-Signature: v1,<base64 HMAC-SHA256 of "<delivery_id>.<timestamp>.<body>">`
  with `X-MLflow-Timestamp` (unix seconds) and `X-MLflow-Delivery-Id`.
- Gatehouse's own forwarder (the Databricks model-update-trigger task): the same scheme under
  `X-Gatehouse-Signature`, `X-Gatehouse-Timestamp`, `X-Gatehouse-Delivery-Id`.
- Databricks registry: `X-Databricks-Signature: <hex HMAC-SHA256 of the body>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping

MLFLOW_SIGNATURE = "X-MLflow-Signature"
MLFLOW_TIMESTAMP = "X-MLflow-Timestamp"
MLFLOW_DELIVERY_ID = "X-MLflow-Delivery-Id"
MLFLOW_HEADERS = (MLFLOW_SIGNATURE, MLFLOW_TIMESTAMP, MLFLOW_DELIVERY_ID)
GATEHOUSE_HEADERS = ("X-Gatehouse-Signature", "X-Gatehouse-Timestamp", "X-Gatehouse-Delivery-Id")
DATABRICKS_SIGNATURE = "X-Databricks-Signature"
DELIVERY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class SignatureError(Exception):
    """The request could not be authenticated; the message says why (never the secret)."""


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header's value, stripped, whatever the case of its name (None if absent)."""
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return value.strip() if isinstance(value, str) else None


def check_freshness(what: str, sent_at: float, now: float, tolerance_seconds: float) -> None:
    """SignatureError when a delivery's own time (`what`, epoch seconds) is further than the
    tolerance from now: stale (or replayed) or in the future."""
    skew = now - sent_at
    if skew > tolerance_seconds:
        raise SignatureError(f"{what} is {skew:.0f}s old, beyond the "
                             f"{tolerance_seconds:.0f}s tolerance (stale or replayed)")
    if -skew > tolerance_seconds:
        raise SignatureError(f"{what} is {-skew:.0f}s in the future, beyond the "
                             f"{tolerance_seconds:.0f}s tolerance")


def mlflow_signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def databricks_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed_headers(secret: str, delivery_id: str, timestamp: int, body: bytes,
                   names: tuple[str, str, str] = GATEHOUSE_HEADERS) -> dict[str, str]:
    """The headers a sender adds to sign `body` with the MLflow scheme."""
    signature_name, timestamp_name, delivery_name = names
    return {delivery_name: delivery_id, timestamp_name: str(timestamp),
            signature_name: mlflow_signature(secret, delivery_id, str(timestamp), body)}


def mlflow_delivery(headers: Mapping[str, str], body: bytes, secret: str | None,
                    now: float, tolerance_seconds: float,
                    names: tuple[str, str, str] = MLFLOW_HEADERS) -> tuple[str | None, int | None]:
    """Check a delivery signed with the MLflow scheme; returns (delivery id, timestamp) or
    raises SignatureError. Without a secret the signature is not required, but a present
    timestamp is still checked."""
    signature_header, timestamp_header, delivery_header = names
    delivery_id = header(headers, delivery_header)
    raw_timestamp = header(headers, timestamp_header)
    signature = header(headers, signature_header)
    if delivery_id is not None and not DELIVERY_ID_PATTERN.match(delivery_id):
        raise SignatureError(f"{delivery_header} is malformed")
    if secret:
        missing = [name for name, value in ((signature_header, signature),
                                            (timestamp_header, raw_timestamp),
                                            (delivery_header, delivery_id)) if not value]
        if missing:
            raise SignatureError("missing header(s): " + ", ".join(missing))
    timestamp = None
    if raw_timestamp:
        if not raw_timestamp.isdigit() or len(raw_timestamp) > 12:
            raise SignatureError(f"{timestamp_header} is not a unix timestamp in seconds")
        timestamp = int(raw_timestamp)
        check_freshness(timestamp_header, timestamp, now, tolerance_seconds)
    if secret:
        if not signature.startswith("v1,"):  # type: ignore[union-attr]
            raise SignatureError(f"{signature_header} must be 'v1,<base64>'")
        try:
            base64.b64decode(signature[3:], validate=True)  # type: ignore[index]
        except (binascii.Error, ValueError):
            raise SignatureError(f"{signature_header} is not valid base64") from None
        expected = mlflow_signature(secret, delivery_id, raw_timestamp, body)  # type: ignore[arg-type]
        if not hmac.compare_digest(expected.encode(), signature.encode()):  # type: ignore[union-attr]
            raise SignatureError(f"{signature_header} does not match the body")
    return delivery_id, timestamp


def databricks_delivery(headers: Mapping[str, str], body: bytes, secret: str | None) -> None:
    if not secret:
        return
    signature = header(headers, DATABRICKS_SIGNATURE)
    if not signature:
        raise SignatureError(f"missing header: {DATABRICKS_SIGNATURE}")
    expected = databricks_signature(secret, body)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise SignatureError(f"{DATABRICKS_SIGNATURE} does not match the body")
