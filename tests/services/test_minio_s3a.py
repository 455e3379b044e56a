"""Delta on the real MinIO server through s3a, and delta-rs reading the same table."""

from __future__ import annotations

import uuid

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from clickrec.config import ClickrecConfig, build_config
from clickrec.io.delta import merge_upsert, table_version
from clickrec.io.lake import Lake
from clickrec.services import LAKE_BUCKET, ServiceProcess
from clickrec.spark import apply_s3a
from tests.support.services import objects


def _minio_lake(spark: SparkSession, minio: ServiceProcess) -> ClickrecConfig:
    """A config whose lake is a fresh prefix of the MinIO bucket, with the session's s3a set to it."""
    config = build_config(
        {"lake": {"root": f"s3a://{LAKE_BUCKET}/test-{uuid.uuid4().hex[:8]}"}, "s3": {"endpoint": minio.url}}
    )
    apply_s3a(spark, config.s3)
    return config


def test_delta_roundtrip_on_minio(spark: SparkSession, minio_env: ServiceProcess) -> None:
    config = _minio_lake(spark, minio_env)
    lake = Lake.from_config(config)
    path = lake.path("silver/kv")
    df = spark.createDataFrame([(i, f"v{i}") for i in range(50)], "k INT, v STRING")
    merge_upsert(path, df, keys=["k"])
    assert table_version(spark, path) == 0
    assertDataFrameEqual(spark.read.format("delta").load(path), df)

    # The object really is on MinIO, and a JVM-free reader sees the same rows.
    names = objects(minio_env, path.removeprefix(f"s3a://{LAKE_BUCKET}/") + "/_delta_log/")
    assert any(n.endswith("00000000000000000000.json") for n in names)
    dt = lake.open("silver/kv")
    assert dt is not None and dt.version() == 0
    assert dt.to_pyarrow_table().num_rows == 50


def test_stream_writes_with_delta_rs_on_minio(spark: SparkSession, minio_env: ServiceProcess) -> None:
    # the stream's micro-batch commits (clickrec.io.delta_rs) on the lake that Spark wrote on MinIO
    import pyarrow as pa

    from clickrec.io import delta_rs

    config = _minio_lake(spark, minio_env)
    lake = Lake.from_config(config)
    path = lake.path("silver/kv")
    merge_upsert(path, spark.createDataFrame([(1, "a"), (2, "b")], "k INT, v STRING"), keys=["k"])
    dt = lake.open("silver/kv")
    assert dt is not None
    delta_rs.merge_upsert(dt, pa.table({"k": [2, 3], "v": ["B", "c"]}), keys=["k"])
    dt = lake.open("silver/kv")
    assert delta_rs.append_once(dt, pa.table({"k": [4], "v": ["d"]}), app_id="q", version=0)
    assert not delta_rs.append_once(lake.open("silver/kv"),
                                    pa.table({"k": [4], "v": ["d"]}), app_id="q", version=0)
    expected = spark.createDataFrame([(1, "a"), (2, "B"), (3, "c"), (4, "d")], "k INT, v STRING")
    assertDataFrameEqual(spark.read.format("delta").load(path), expected)
    found = delta_rs.read_where_in(lake.open("silver/kv"), "v", ["B", "d"], ("k", "v"))
    assert sorted(found.column("k").to_pylist()) == [2, 4]

