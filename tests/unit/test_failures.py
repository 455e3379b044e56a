"""Which failures are a store that did not answer (clickrec.io.failures: exit 4), and which stay bugs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from clickrec.errors import ServiceError, StorageUnavailableError
from clickrec.io.failures import storage_error
from tests.support.unreachable import closed_port, unreachable_bucket


def test_s3a_refused_behind_py4j_is_a_storage_failure_naming_path_and_endpoint(spark: SparkSession) -> None:
    from clickrec.io.files import remove_stale_dirs

    endpoint = f"http://127.0.0.1:{closed_port()}"
    bucket = unreachable_bucket(spark, endpoint)
    with pytest.raises(Exception) as raised:  # Py4JJavaError: java.net.ConnectException from S3A
        remove_stale_dirs(spark, f"s3a://{bucket}/lake/_staging", older_than_hours=1)
    error = storage_error(raised.value)
    assert isinstance(error, StorageUnavailableError) and isinstance(error, ServiceError)
    assert error.exit_code == 4
    assert f"s3a://{bucket}/lake/_staging" in str(error)
    assert endpoint.removeprefix("http://") in str(error) and "Connection refused" in str(error)


def test_delta_on_an_unreachable_s3a_bucket_is_a_storage_failure(spark: SparkSession) -> None:
    from clickrec.io import delta

    endpoint = f"http://127.0.0.1:{closed_port()}"
    bucket = unreachable_bucket(spark, endpoint)
    with pytest.raises(Exception) as raised:
        delta.table_version(spark, f"s3a://{bucket}/lake/silver/interactions")
    error = storage_error(raised.value)
    assert error is not None and endpoint.removeprefix("http://") in str(error)


def test_delta_rs_on_an_unreachable_store_is_a_storage_failure() -> None:
    from deltalake import DeltaTable

    endpoint = f"http://127.0.0.1:{closed_port()}"
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
               "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused",
               "max_retries": "0", "retry_timeout": "2s"}
    with pytest.raises(OSError) as raised:
        DeltaTable("s3://lake/silver/interactions", storage_options=options)
    error = storage_error(raised.value)
    assert error is not None and endpoint in str(error)
    assert "\x1b[" not in str(error) and "\n" not in str(error)  # one line, no colour codes


def test_bugs_stay_bugs(spark: SparkSession, tmp_path: Path) -> None:
    from pyspark.errors import AnalysisException

    with pytest.raises(AnalysisException) as missing:  # a path that is not there: not a store failure
        spark.read.format("delta").load(str(tmp_path / "nothing-here"))
    assert storage_error(missing.value) is None
    with pytest.raises(Exception) as sql_bug:
        spark.sql("SELECT no_such_column FROM range(1)").collect()
    assert storage_error(sql_bug.value) is None
    assert storage_error(ValueError("a bug")) is None
    assert storage_error(KeyError("x")) is None
    assert storage_error(FileNotFoundError(2, "No such file", "/tmp/x")) is None


def test_python_connection_failures_and_their_wrappers_are_storage_failures() -> None:
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as exc:
            raise RuntimeError("while writing the lease") from exc
    except RuntimeError as wrapped:
        error = storage_error(wrapped)
    assert error is not None and "Connection refused" in str(error)


def test_the_stream_classifies_a_failed_batch_the_same_way(spark: SparkSession) -> None:
    from types import SimpleNamespace

    from clickrec.errors import InputError
    from clickrec.io.files import remove_stale_dirs
    from clickrec.stream import _query_failure

    endpoint = f"http://127.0.0.1:{closed_port()}"
    bucket = unreachable_bucket(spark, endpoint)
    with pytest.raises(Exception) as raised:
        remove_stale_dirs(spark, f"s3a://{bucket}/lake/_staging", older_than_hours=1)
    store_down = _query_failure("q", SimpleNamespace(error=raised.value), RuntimeError("query failed"))  # type: ignore[arg-type]
    assert isinstance(store_down, ServiceError) and endpoint.removeprefix("http://") in str(store_down)
    own = InputError("bad")
    assert _query_failure("q", SimpleNamespace(error=own), RuntimeError("query failed")) is own  # type: ignore[arg-type]
    bug = ValueError("a bug in the batch")
    assert _query_failure("q", SimpleNamespace(error=bug), RuntimeError("query failed")) is bug  # type: ignore[arg-type]
    outside = _query_failure("q", SimpleNamespace(error=None), RuntimeError("kafka went away"))  # type: ignore[arg-type]
    assert isinstance(outside, ServiceError) and "kafka went away" in str(outside)


def test_a_task_failure_that_reaches_the_driver_as_text_is_classified_by_that_text(spark: SparkSession) -> None:
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    assert jvm is not None

    def job_failure(text: str) -> Py4JJavaError:
        return Py4JJavaError("An error occurred while calling o1.save.\n", jvm.org.apache.spark.SparkException(text))

    store = storage_error(job_failure(
        "Job aborted due to stage failure: Task 0 in stage 3.0 failed 1 times, most recent failure: "
        "java.net.ConnectException: Connect to 127.0.0.1:9 failed: Connection refused"))
    assert store is not None and "java.net.ConnectException: Connect to 127.0.0.1:9" in str(store)
    worker = storage_error(job_failure(
        "Job aborted due to stage failure: Python worker exited unexpectedly (crashed): java.io.EOFException"))
    assert worker is None  # Spark's own socket to a dead worker, not a store
    missing = storage_error(job_failure("Job aborted: java.io.FileNotFoundException: s3a://b/part-0"))
    assert missing is None
