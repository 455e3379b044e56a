"""The stream's delta-rs writes on a table Spark created: idempotent appends, upserts, reads."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession

from clickrec.config import ClickrecConfig
from clickrec.io import delta_rs
from clickrec.io.lake import Lake
from tests.support.config import make_config

SCHEMA = "k string, v double, d date"


def _table(spark: SparkSession, tmp_path: Path) -> tuple[ClickrecConfig, str]:
    config = make_config(tmp_path)
    path = f"{config.lake.root}/t"
    rows = [("a", 1.0, date(2019, 10, 1)), ("b", 2.0, date(2019, 10, 2))]
    spark.createDataFrame(rows, SCHEMA).write.format("delta").partitionBy("d").save(path)
    return config, path


def _arrow(rows: list[tuple[str, float, date]]) -> pa.Table:
    return pa.table({"k": [r[0] for r in rows], "v": [r[1] for r in rows], "d": [r[2] for r in rows]})


def _spark_rows(spark: SparkSession, path: str) -> list[tuple[str, float, date]]:
    return sorted((r.k, r.v, r.d) for r in spark.read.format("delta").load(path).collect())


def test_append_once_skips_a_replayed_version(spark: SparkSession, tmp_path: Path) -> None:
    config, path = _table(spark, tmp_path)
    lake = Lake.from_config(config)
    new = _arrow([("c", 3.0, date(2019, 10, 3))])
    assert delta_rs.append_once(lake.open("t"), new, app_id="q", version=7)
    assert not delta_rs.append_once(lake.open("t"), new, app_id="q", version=7)
    assert not delta_rs.append_once(lake.open("t"), new, app_id="q", version=6)
    assert _spark_rows(spark, path) == [("a", 1.0, date(2019, 10, 1)), ("b", 2.0, date(2019, 10, 2)),
                                        ("c", 3.0, date(2019, 10, 3))]
    assert lake.open("t").transaction_version("q") == 7


def test_upsert_then_filtered_read_over_spark_and_delta_rs_files(spark: SparkSession, tmp_path: Path) -> None:
    config, path = _table(spark, tmp_path)
    lake = Lake.from_config(config)
    dt = lake.open("t")
    delta_rs.merge_upsert(dt, _arrow([("b", 20.0, date(2019, 10, 2)), ("e", 5.0, date(2019, 10, 5))]), keys=("k",))
    assert _spark_rows(spark, path) == [("a", 1.0, date(2019, 10, 1)), ("b", 20.0, date(2019, 10, 2)),
                                        ("e", 5.0, date(2019, 10, 5))]
    # files written by Spark (a) and by delta-rs (b, e) in one filtered read, quotes escaped
    found = delta_rs.read_where_in(lake.open("t"), "k", ["a", "e", "x'y"], ("k", "v", "d"))
    assert sorted(found.to_pylist(), key=lambda r: r["k"]) == [
        {"k": "a", "v": 1.0, "d": date(2019, 10, 1)}, {"k": "e", "v": 5.0, "d": date(2019, 10, 5)}]
    assert found.schema.field("k").type == pa.string()
    assert delta_rs.read_where_in(dt, "k", [], ("k",)).num_rows == 0
    assert delta_rs.max_value(lake.open("t"), "v") == 20.0
    assert lake.open("missing") is None


def test_upsert_leaves_unchanged_rows_and_their_files_alone(spark: SparkSession, tmp_path: Path) -> None:
    """Like Spark's merge_upsert: a matched row whose values are equal is not rewritten."""
    config, path = _table(spark, tmp_path)
    lake = Lake.from_config(config)
    files = set(lake.require("t").file_uris())
    same = _arrow([("a", 1.0, date(2019, 10, 1)), ("b", 2.0, date(2019, 10, 2))])
    metrics = delta_rs.merge_upsert(lake.require("t"), same, keys=("k",))
    assert metrics["num_target_rows_updated"] == 0
    assert set(lake.require("t").file_uris()) == files  # nothing rewritten
    metrics = delta_rs.merge_upsert(lake.require("t"), _arrow([("a", 1.0, date(2019, 10, 1)),
                                                             ("b", 20.0, date(2019, 10, 2))]), keys=("k",))
    assert metrics["num_target_rows_updated"] == 1
    assert [f for f in lake.require("t").file_uris() if "2019-10-01" in f] == [f for f in files if "2019-10-01" in f]
    assert _spark_rows(spark, path) == [("a", 1.0, date(2019, 10, 1)), ("b", 20.0, date(2019, 10, 2))]
