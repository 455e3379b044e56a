from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from clickrec.config import ClickrecConfig
from clickrec.io.delta import merge_upsert, table_version
from clickrec.io.lake import Lake


def _latest_metrics(spark: SparkSession, path: str) -> dict[str, str]:
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("operation", "operationMetrics").first()
    assert row is not None
    return {"operation": row["operation"], **row["operationMetrics"]}


def test_write_read_merge_and_idempotent_rerun(spark: SparkSession, config: ClickrecConfig) -> None:
    path = Lake.from_config(config).path("test/kv")
    first = spark.createDataFrame([(1, "a"), (2, "b")], "k INT, v STRING")
    merge_upsert(path, first, keys=["k"])
    assert table_version(spark, path) == 0
    assertDataFrameEqual(spark.read.format("delta").load(path), first)

    update = spark.createDataFrame([(2, "B"), (3, "c")], "k INT, v STRING")
    merge_upsert(path, update, keys=["k"])
    expected = spark.createDataFrame([(1, "a"), (2, "B"), (3, "c")], "k INT, v STRING")
    assertDataFrameEqual(spark.read.format("delta").load(path), expected)
    metrics = _latest_metrics(spark, path)
    assert metrics["operation"] == "MERGE"
    assert metrics["numTargetRowsUpdated"] == "1"
    assert metrics["numTargetRowsInserted"] == "1"

    # The same MERGE again changes nothing: no row updated or inserted, same content.
    merge_upsert(path, update, keys=["k"])
    metrics = _latest_metrics(spark, path)
    assert metrics["numTargetRowsUpdated"] == "0"
    assert metrics["numTargetRowsInserted"] == "0"
    assertDataFrameEqual(spark.read.format("delta").load(path), expected)


def test_version_of_missing_table_is_none(spark: SparkSession, config: ClickrecConfig) -> None:
    assert table_version(spark, Lake.from_config(config).path("nope")) is None


def test_a_table_another_writer_created_exists_for_a_session_that_looked_before(
    spark: SparkSession, config: ClickrecConfig
) -> None:
    # The session's DeltaLog of the path was loaded while there was no table (as during its own
    # losing attempt to create it); then another process created the table.
    import pyarrow as pa
    from deltalake import write_deltalake

    from clickrec.io.delta import table_exists

    path = Lake.from_config(config).path("test/created_elsewhere")
    log = spark._jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)  # type: ignore[union-attr]
    assert log.unsafeVolatileSnapshot().version() == -1 and not table_exists(spark, path)
    write_deltalake(path, pa.table({"k": [1]}))
    assert table_exists(spark, path)
    assert table_version(spark, path) == 0
