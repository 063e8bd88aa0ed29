"""Fixtures shared by the monitoring tests."""

from __future__ import annotations

import pytest

from tests.monitoring.traffic import fit


@pytest.fixture(scope="session")
def fitted():
    """A logistic regression on generated data and its reference distribution."""
    return fit()
