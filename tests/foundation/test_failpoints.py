"""Failpoints are inert unless armed; armed, they raise, sleep or end the process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.foundation.failpoints import ENVIRONMENT, EXIT_STATUS, FailpointError, armed, failpoint


def test_inert_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    failpoint("anything.at_all")


def test_only_the_named_point_fires(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT, "a.one=raise; b.two=sleep(0)")
    failpoint("c.three")
    failpoint("b.two")
    with pytest.raises(FailpointError, match="a.one"):
        failpoint("a.one")


def test_spec_parsing():
    assert armed("x=exit;y=raise,z") == {"x": "exit", "y": "raise", "z": "exit"}


def test_unknown_action_is_an_error(monkeypatch):
    monkeypatch.setenv(ENVIRONMENT, "p=explode")
    with pytest.raises(ValueError, match="unknown action"):
        failpoint("p")


def test_exit_ends_the_process_without_cleanup():
    code = ("import sys\nfrom shared.foundation.failpoints import failpoint\n"
            "try:\n    failpoint('p')\nfinally:\n    print('cleanup ran')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, ENVIRONMENT: "p=exit"}, timeout=60)
    assert done.returncode == EXIT_STATUS
    assert "cleanup ran" not in done.stdout


def test_trace_and_the_wildcard(monkeypatch, caplog):
    monkeypatch.setenv(ENVIRONMENT, "*=trace;a.one=raise")
    failpoint("b.two")
    assert "failpoint b.two: trace" in caplog.text
    with pytest.raises(FailpointError):
        failpoint("a.one")
