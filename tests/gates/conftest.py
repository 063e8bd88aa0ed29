"""A Spark Connect session to a local Spark server, started once for the whole test session
(about 20 s) and only when a test asks for it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    from shared.gates.spark import session

    spark = session("local[2]")
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    yield spark
    spark.stop()
