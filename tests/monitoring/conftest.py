"""Fixtures shared by the monitoring tests."""

from __future__ import annotations

import pytest

from tests.monitoring.traffic import fit


@pytest.fixture(scope="session")
def fitted():
    """A logistic regression on generated data and its reference distribution."""
    return fit()


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A local Spark SQL session (the machine's Java 17), started once: what the statement-
    execution peer runs the monitor's SQL on. UTC and ANSI mode, as Databricks SQL warehouses."""
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("gatehouse-sql-warehouse")
               .config("spark.sql.session.timeZone", "UTC").config("spark.sql.ansi.enabled", "true")
               .config("spark.sql.shuffle.partitions", "1").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
