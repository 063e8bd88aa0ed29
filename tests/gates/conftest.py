"""A Spark Connect session to a local Spark server, started once for the whole test session
(about 20 s) and only when a test asks for it."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def spark():
    from shared.gates.spark import session

    # pyspark's test mode: the local Connect server takes a free port instead of 15002, so
    # test runs (and benchmarks) on the same machine do not collide
    os.environ["SPARK_TESTING"] = "1"
    spark = session("local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    yield spark
    spark.stop()
