"""clickrec's Delta LogStore for s3a (jvm/logstore) on the real MinIO: a commit is a put-if-absent.

Delta's S3SingleDriverLogStore checks that `_delta_log/<version>.json` is absent and then PUTs it,
so a writer elsewhere that commits the same version in between is silently overwritten.
S3ConditionalPutLogStore's PUT carries If-None-Match: *; the writer that lost gets
java.nio.file.FileAlreadyExistsException, which Delta's OptimisticTransaction retries or reports.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from functools import reduce
from typing import ClassVar

import pytest
from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from clickrec.config import ClickrecConfig, build_config
from clickrec.services import LAKE_BUCKET, ServiceProcess
from clickrec.spark import LOG_STORES, apply_s3a, session_conf
from tests.support.services import objects

LOG_STORE = LOG_STORES["conditional_put"]
LOG_STORE_KEY = "spark.delta.logStore.s3a.impl"
ALREADY_EXISTS = "java.nio.file.FileAlreadyExistsException"


@pytest.fixture()
def s3_config(spark: SparkSession, minio_env: ServiceProcess) -> ClickrecConfig:
    """A config whose lake is a fresh prefix of the MinIO bucket, with the session's s3a set to it."""
    config = build_config(
        {"lake": {"root": f"s3a://{LAKE_BUCKET}/logstore-{uuid.uuid4().hex[:8]}"}, "s3": {"endpoint": minio_env.url}}
    )
    apply_s3a(spark, config.s3)
    return config


def _minio(minio: ServiceProcess):  # type: ignore[no-untyped-def]
    from minio import Minio

    return Minio(minio.url.removeprefix("http://"), access_key=minio.env["AWS_ACCESS_KEY_ID"],
                 secret_key=minio.env["AWS_SECRET_ACCESS_KEY"], secure=False)


def _read_object(minio: ServiceProcess, key: str) -> str:
    response = _minio(minio).get_object(LAKE_BUCKET, key)
    try:
        return response.read().decode()
    finally:
        response.close()
        response.release_conn()


def _commit_path(config: ClickrecConfig) -> tuple[str, str]:
    """The s3a path of version 0's commit file of a table in the lake, and its object key."""
    path = f"{config.lake.root}/table/_delta_log/00000000000000000000.json"
    return path, path.removeprefix(f"s3a://{LAKE_BUCKET}/")


def _write(spark: SparkSession, path: str, actions: object, store_class: str = LOG_STORE) -> None:
    """LogStore.write(path, actions, overwrite=false, hadoopConf) with the session's Hadoop conf."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    store = reduce(getattr, store_class.split("."), jvm)(conf)
    if isinstance(actions, list):
        actions = jvm.java.util.ArrayList(actions).iterator()
    store.write(jvm.org.apache.hadoop.fs.Path(path), actions, False, conf)


def _java_class(error: Py4JJavaError) -> str:
    return str(error.java_exception.getClass().getName())


def test_second_commit_of_a_version_fails_and_keeps_the_first(
    spark: SparkSession, s3_config: ClickrecConfig, minio_env: ServiceProcess
) -> None:
    path, key = _commit_path(s3_config)
    _write(spark, path, ['{"commitInfo":{"writer":"first"}}', '{"add":{"path":"a"}}'])
    with pytest.raises(Py4JJavaError) as error:
        _write(spark, path, ['{"commitInfo":{"writer":"second"}}'])
    assert _java_class(error.value) == ALREADY_EXISTS
    assert str(error.value.java_exception.getFile()) == path
    assert _read_object(minio_env, key) == '{"commitInfo":{"writer":"first"}}\n{"add":{"path":"a"}}\n'


class _OtherWriterCommitsFirst:
    """A commit's actions as a java.util.Iterator implemented in Python (a py4j callback).

    Before handing over the first action, that is after the LogStore has opened its stream (and
    after S3SingleDriverLogStore has checked that the object is absent), it lets another writer
    commit the same version: MinIO's own client, standing for a driver on another machine.
    """

    def __init__(self, lines: list[str], other_writer: Callable[[], None]) -> None:
        self._lines: Iterator[str] = iter(lines)
        self._left = len(lines)
        self._other_writer: Callable[[], None] | None = other_writer

    def hasNext(self) -> bool:
        if self._other_writer is not None:
            other_writer, self._other_writer = self._other_writer, None
            other_writer()
        return self._left > 0

    def next(self) -> str:
        self._left -= 1
        return next(self._lines)

    class Java:
        implements: ClassVar[list[str]] = ["java.util.Iterator"]  # read by py4j


def test_commit_that_lost_the_race_fails_instead_of_overwriting(
    spark: SparkSession, s3_config: ClickrecConfig, minio_env: ServiceProcess
) -> None:
    from pyspark.java_gateway import ensure_callback_server_started

    path, key = _commit_path(s3_config)
    winner = b'{"commitInfo":{"writer":"other machine"}}\n'

    def other_writer() -> None:
        _minio(minio_env).put_object(LAKE_BUCKET, key, io.BytesIO(winner), len(winner))

    ensure_callback_server_started(spark.sparkContext._gateway)
    actions = _OtherWriterCommitsFirst(['{"commitInfo":{"writer":"this driver"}}'], other_writer)
    with pytest.raises(Py4JJavaError) as error:
        _write(spark, path, actions)
    assert _java_class(error.value) == ALREADY_EXISTS
    assert actions._other_writer is None  # the other writer did commit first
    assert _read_object(minio_env, key) == winner.decode()


def test_spark_session_for_s3_commits_delta_through_it(
    spark: SparkSession, s3_config: ClickrecConfig, minio_env: ServiceProcess
) -> None:
    """A session built for S3 has it in its SparkConf, where Delta looks; so does one that
    apply_s3a pointed at S3 after it started (the run's session, built before MinIO was up)."""
    assert session_conf(s3_config)[LOG_STORE_KEY] == LOG_STORE  # s3.commit defaults to conditional_put
    assert spark.sparkContext._jsc.sc().conf().get(LOG_STORE_KEY) == LOG_STORE  # type: ignore[union-attr]
    path = f"{s3_config.lake.root}/silver/kv"
    first = spark.createDataFrame([(1, "a"), (2, "b")], "k INT, v STRING")
    first.write.format("delta").save(path)
    spark.createDataFrame([(3, "c")], "k INT, v STRING").write.format("delta").mode("append").save(path)
    assertDataFrameEqual(spark.read.format("delta").load(path),
                         spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], "k INT, v STRING"))

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    delegate = delta_log.store().getDelegate(jvm.org.apache.hadoop.fs.Path(path))
    assert str(delegate.logStoreImpl().getClass().getName()) == LOG_STORE
    names = objects(minio_env, path.removeprefix(f"s3a://{LAKE_BUCKET}/") + "/_delta_log/")
    assert {n.rsplit("/", 1)[-1] for n in names} >= {"00000000000000000000.json", "00000000000000000001.json"}
