"""A laptop in another time zone: naive UTC datetimes mean the same instant in Spark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from datetime import datetime
from pyspark.sql import functions as F
from clickrec.config import build_config
from clickrec.spark import build_spark_session

spark = build_spark_session(build_config({"spark": {
    "master": "local[1]", "ui_enabled": False, "log_level": "ERROR", "driver_memory": "1g",
    "checkpoint_dir": sys.argv[1], "conf": {"spark.local.dir": sys.argv[1]}}}))
t = datetime(2100, 1, 1)
row = spark.range(1).select(F.lit(t).cast("string").alias("s"), F.lit(t).alias("t")).first()
print("RESULT", row["s"], row["t"].isoformat())
"""


def test_a_naive_utc_datetime_is_the_same_instant_when_tz_is_not_utc(tmp_path: Path) -> None:
    # Without the session factory pinning the process to UTC, PySpark reads the literal in
    # New York time: "2100-01-01 05:00:00" in the UTC session.
    env = {**os.environ, "TZ": "America/New_York"}
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    assert line.split(" ", 1)[1] == "2100-01-01 00:00:00 2100-01-01T00:00:00"
