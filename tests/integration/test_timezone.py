"""A laptop in another time zone: naive UTC datetimes mean the same instant in Spark."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec.spark import build_spark_session
from tests.support.config import make_config


def test_a_naive_utc_datetime_is_the_same_instant_when_tz_is_not_utc(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process in New York time, as a laptop's shell would start it; the factory must pin it
    # (and the JVM it talks to) back to UTC. Without that, PySpark reads the literal in New York
    # time: "2100-01-01 05:00:00" in the UTC session.
    try:
        with monkeypatch.context() as patch:
            patch.setenv("TZ", "America/New_York")
            time.tzset()
            assert time.localtime(0).tm_hour == 19  # 1969-12-31 19:00 in New York: really not UTC
            session = build_spark_session(make_config(tmp_path))
            t = datetime(2100, 1, 1)
            row = session.range(1).select(F.lit(t).cast("string").alias("s"), F.lit(t).alias("t")).first()
    finally:
        time.tzset()  # the environment's TZ is restored: apply it to this process again
    assert (row["s"], row["t"].isoformat()) == ("2100-01-01 00:00:00", "2100-01-01T00:00:00")
