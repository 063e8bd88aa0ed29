"""The pure parsers behind the intake routes, fed damaged documents by the thousand (no storage,
so many more examples than the route fuzz can afford): each answers a parsed result or a
BodyError (a 4xx naming the problem), never any other exception. GATEHOUSE_FUZZ_EXAMPLES scales
the examples (default 120 per route here means 1,000 per parser)."""

from __future__ import annotations

import os
import random
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import alerts
from shared.foundation.http import BodyError
from shared.intake import inbound, signatures
from tests.fuzz.hostile import (
    ALERT_SOURCES,
    alert_template,
    body_from,
    databricks_template,
    forwarded_template,
    mlflow_template,
)

EXAMPLES = int(os.environ.get("GATEHOUSE_FUZZ_EXAMPLES", "120")) * 25 // 3

NOW = time.time()
PARSERS = {
    **{f"alerts/{source}": (lambda body, s=source: alerts.parse_alerts(s, body),
                            lambda rnd, s=source: alert_template(s, NOW))
       for source in ALERT_SOURCES},
    "mlflow": (inbound.parse_mlflow, lambda rnd: mlflow_template(NOW)),
    "databricks": (lambda body: inbound.parse_databricks(body, now=NOW, tolerance_seconds=300),
                   lambda rnd: databricks_template(NOW, rnd)),
    "forwarded": (inbound.parse_forwarded, lambda rnd: forwarded_template(NOW)),
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=5), derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(rnd=st.randoms(use_true_random=False))
def test_a_parser_answers_a_result_or_a_body_error(name: str, rnd: random.Random):
    parse, template = PARSERS[name]
    body = body_from(template(rnd), rnd)
    try:
        parse(body)
    except BodyError as refused:
        assert 400 <= refused.status < 500 and refused.message
    except signatures.SignatureError as refused:  # a Databricks delivery too old or too new
        assert name == "databricks" and str(refused)
