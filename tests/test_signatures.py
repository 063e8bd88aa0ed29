"""Signature checks against MLflow's own signer and Databricks' documented scheme."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from shared.intake import signatures
from shared.intake.signatures import SignatureError

SECRET = "s3cret-for-tests"
BODY = b'{"entity":"model_version","action":"created"}'
NOW = 1_800_000_000
TOLERANCE = 300


def mlflow_headers(body: bytes = BODY, secret: str = SECRET, timestamp: int = NOW,
                   delivery_id: str = "2f1e4c1a-8d0b-4b52-9e11-6a1f0b3c7d10") -> dict:
    return {
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, str(timestamp),
                                                       body.decode()),
    }


def check(headers, body=BODY, secret=SECRET, now=NOW):
    return signatures.mlflow_delivery(headers, body, secret, now, TOLERANCE)


def test_our_signer_matches_mlflows():
    headers = mlflow_headers()
    assert signatures.mlflow_signature(SECRET, headers["X-MLflow-Delivery-Id"], str(NOW), BODY) \
        == headers["X-MLflow-Signature"]


def test_valid_mlflow_delivery_passes_and_returns_its_id():
    assert check(mlflow_headers()) == ("2f1e4c1a-8d0b-4b52-9e11-6a1f0b3c7d10", NOW)


def test_header_names_are_case_insensitive_in_lowercase_maps():
    lowered = {k.lower(): v for k, v in mlflow_headers().items()}
    assert check(lowered)[1] == NOW


@pytest.mark.parametrize("mutate,reason", [
    (lambda h: (h, BODY + b" "), "does not match"),                       # tampered body
    (lambda h: (mlflow_headers(secret="wrong"), BODY), "does not match"),  # wrong secret
    (lambda h: ({**h, "X-MLflow-Delivery-Id": "other-id"}, BODY), "does not match"),
    (lambda h: (mlflow_headers(timestamp=NOW - TOLERANCE - 1), BODY), "old"),
    (lambda h: (mlflow_headers(timestamp=NOW + TOLERANCE + 1), BODY), "future"),
    (lambda h: ({k: v for k, v in h.items() if k != "X-MLflow-Signature"}, BODY),
     "missing header(s): X-MLflow-Signature"),
    (lambda h: ({k: v for k, v in h.items() if k != "X-MLflow-Timestamp"}, BODY),
     "missing header(s): X-MLflow-Timestamp"),
    (lambda h: ({k: v for k, v in h.items() if k != "X-MLflow-Delivery-Id"}, BODY),
     "missing header(s): X-MLflow-Delivery-Id"),
    (lambda h: ({}, BODY), "missing header(s)"),
    (lambda h: ({**h, "X-MLflow-Timestamp": "yesterday"}, BODY), "not a unix timestamp"),
    (lambda h: ({**h, "X-MLflow-Timestamp": str(NOW * 1000)}, BODY), "in seconds"),
    (lambda h: ({**h, "X-MLflow-Signature": "v2," + h["X-MLflow-Signature"][3:]}, BODY),
     "must be 'v1,<base64>'"),
    (lambda h: ({**h, "X-MLflow-Signature": "v1,@@@not-base64@@@"}, BODY), "not valid base64"),
    (lambda h: ({**h, "X-MLflow-Delivery-Id": "bad id with spaces"}, BODY), "malformed"),
])
def test_every_mlflow_failure_mode_is_refused_with_a_reason(mutate, reason):
    headers, body = mutate(mlflow_headers())
    with pytest.raises(SignatureError) as refused:
        check(headers, body)
    assert reason in str(refused.value)
    assert SECRET not in str(refused.value)


def test_without_a_secret_unsigned_deliveries_pass_but_timestamps_still_count():
    assert signatures.mlflow_delivery({}, BODY, None, NOW, TOLERANCE) == (None, None)
    with pytest.raises(SignatureError):
        signatures.mlflow_delivery({"X-MLflow-Timestamp": str(NOW - 10_000)}, BODY, None, NOW,
                                   TOLERANCE)


def test_timestamps_at_the_edge_of_the_tolerance_pass():
    assert check(mlflow_headers(timestamp=NOW - TOLERANCE))[1] == NOW - TOLERANCE
    assert check(mlflow_headers(timestamp=NOW + TOLERANCE))[1] == NOW + TOLERANCE


def databricks_headers(body: bytes = BODY, secret: str = SECRET) -> dict:
    # The scheme from Databricks' docs: hex HMAC-SHA256 of the raw body with the shared secret.
    return {"X-Databricks-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def test_databricks_signature_valid_and_uppercase_hex_pass():
    signatures.databricks_delivery(databricks_headers(), BODY, SECRET)
    upper = {"X-Databricks-Signature": databricks_headers()["X-Databricks-Signature"].upper()}
    signatures.databricks_delivery(upper, BODY, SECRET)


@pytest.mark.parametrize("headers,body,reason", [
    (databricks_headers(), BODY + b"x", "does not match"),
    (databricks_headers(secret="wrong"), BODY, "does not match"),
    ({}, BODY, "missing header: X-Databricks-Signature"),
    ({"X-Databricks-Signature": ""}, BODY, "missing header"),
    ({"X-Databricks-Signature": "zz"}, BODY, "does not match"),
])
def test_databricks_failures(headers, body, reason):
    with pytest.raises(SignatureError) as refused:
        signatures.databricks_delivery(headers, body, SECRET)
    assert reason in str(refused.value)
