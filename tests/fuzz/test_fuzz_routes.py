"""Every HTTP route of the Function App, fed hostile bodies, headers, query strings and route
params (tests/fuzz/hostile.py): never a 5xx, never an exception, never stuck (an answer within
DEADLINE), and every 4xx says in JSON what the problem is. GATEHOUSE_FUZZ_EXAMPLES sets the
examples per route (default 120)."""

from __future__ import annotations

import os
import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.hostile import BUILDERS, fuzz_request, problem_named

EXAMPLES = int(os.environ.get("GATEHOUSE_FUZZ_EXAMPLES", "120"))
DEADLINE = timedelta(seconds=10)  # storage round trips take milliseconds; a stuck parser does not

pytestmark = pytest.mark.e2e


def test_every_http_route_of_the_app_is_fuzzed(http_functions):
    assert sorted(http_functions) == sorted(BUILDERS)


@pytest.mark.parametrize("function", sorted(BUILDERS))
@settings(max_examples=EXAMPLES, deadline=DEADLINE, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rnd=st.randoms(use_true_random=False))
def test_no_input_breaks_a_route(fuzz_app, fuzz_secrets, function: str, rnd: random.Random):
    request = fuzz_request(function, rnd, fuzz_secrets)
    status, content_type, body = fuzz_app(request)
    assert status < 500, (request, status, body[:500])
    if status >= 400:
        problem = problem_named(status, content_type, body)
        assert problem is None, (request, problem)
