"""Lineage tags and latency percentiles."""

from __future__ import annotations

import time

import numpy as np
import pytest

from shared.gates.latency import LatencyStats, latency_gate, measure_latency
from shared.gates.lineage import lineage_gate

REQUIRED = ["dataset_version", "feature_store_table", "team"]


def test_lineage_from_version_or_run_tags():
    result = lineage_gate("run-1", {"dataset_version": "v7"},
                          {"feature_store_table": "fs.tx", "team": "risk"}, REQUIRED, True, True)
    assert result.status == "pass"
    assert result.evidence["found"] == {"dataset_version": "v7", "feature_store_table": "fs.tx",
                                        "team": "risk"}


def test_missing_lineage_blocks():
    result = lineage_gate(None, {"team": " "}, {}, REQUIRED, True, True)
    assert result.status == "fail" and result.blocks
    assert result.evidence["missing"] == ["run id", "dataset_version", "feature_store_table",
                                          "team"]
    assert result.detail.startswith("missing lineage: run id")
    relaxed = lineage_gate(None, {"team": "risk"}, {}, ["team"], False, True)
    assert relaxed.status == "pass"


def test_latency_percentiles():
    delays = iter([0.0] * 5 + [0.002] * 95 + [0.02] * 5)

    def predict(row):
        time.sleep(next(delays))

    stats = measure_latency(predict, [1, 2, 3], warmup=5, requests=100)
    assert stats.requests == 100
    assert 2 <= stats.p50_ms < 10
    assert stats.p99_ms >= 20
    with pytest.raises(ValueError):
        measure_latency(predict, [], 0, 10)


def test_latency_gate_absolute_and_relative():
    fast = LatencyStats(1.0, 2.0, 3.0, 100)
    slow = LatencyStats(30.0, 60.0, 120.0, 100)
    medium = LatencyStats(10.0, 15.0, 20.0, 100)
    assert latency_gate(fast, None, 100, 1.5, 5, True).status == "pass"
    absolute = latency_gate(slow, None, 100, 1.5, 5, True)
    assert absolute.status == "fail" and "> 100" in absolute.detail
    relative = latency_gate(medium, fast, 100, 1.5, 5, True)
    assert relative.status == "fail" and "6.67x" in relative.detail
    # below the floor the ratio is noise: not judged
    assert latency_gate(LatencyStats(1, 1, 4.0, 100), fast, 100, 1.5, 5, True).status == "pass"
    assert latency_gate(None, None, 100, 1.5, 5, True).status == "skipped"
    assert np.isclose(relative.evidence["p99_ratio"], 20 / 3)
