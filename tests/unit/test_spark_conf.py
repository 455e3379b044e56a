from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from clickrec import paths
from clickrec.config import build_config
from clickrec.errors import SetupError
from clickrec.spark import cached_jars, s3a_conf, session_conf


def test_session_conf_has_delta_and_cached_jars() -> None:
    conf = session_conf(build_config({}))
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    jars = conf["spark.driver.extraClassPath"].split(os.pathsep)
    assert any("delta-spark_4.2_2.13" in j for j in jars)
    assert any("spark-sql-kafka-0-10_2.13-4.2.0" in j for j in jars)
    assert any("hadoop-aws-3.5.0" in j for j in jars)
    assert "spark.jars.packages" not in conf  # nothing is downloaded at run time


def test_local_master_puts_jars_on_the_classpath_instead_of_copying_them() -> None:
    """`spark.jars` copies every jar (686 MB of AWS SDK) into each local session's temp dir."""
    local = session_conf(build_config({"spark": {"master": "local[2]"}}))
    assert "spark.jars" not in local
    assert local["spark.driver.extraClassPath"]
    cluster = session_conf(build_config({"spark": {"master": "spark://host:7077"}}))
    assert "spark.driver.extraClassPath" not in cluster
    assert any("delta-spark_" in j for j in cluster["spark.jars"].split(","))
    own = session_conf(build_config({"spark": {"conf": {"spark.driver.extraClassPath": "/opt/my.jar"}}}))
    assert own["spark.driver.extraClassPath"].startswith("/opt/my.jar" + os.pathsep)
    assert "delta-spark_" in own["spark.driver.extraClassPath"]


def test_missing_jar_cache_says_run_setup(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="make setup"):
        cached_jars(tmp_path / "nothing-here")


def test_null_jars_dir_leaves_classpath_alone() -> None:
    conf = session_conf(build_config({"spark": {"jars_dir": None, "master": None, "driver_memory": None}}))
    assert "spark.jars" not in conf
    assert "spark.driver.extraClassPath" not in conf
    assert "spark.master" not in conf


def test_s3a_credentials_only_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = build_config({"s3": {"endpoint": "http://127.0.0.1:9"}}).s3
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    conf = s3a_conf(s3)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert "spark.hadoop.fs.s3a.access.key" not in conf
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    conf = s3a_conf(s3)
    assert conf["spark.hadoop.fs.s3a.access.key"] == "k"
    assert conf["spark.hadoop.fs.s3a.secret.key"] == "s"


def test_s3a_log_store_follows_s3_commit() -> None:
    key = "spark.delta.logStore.s3a.impl"
    s3 = {"endpoint": "http://127.0.0.1:9"}
    assert s3a_conf(build_config({"s3": s3}).s3)[key] == "dev.clickrec.delta.storage.S3ConditionalPutLogStore"
    assert s3a_conf(build_config({"s3": {**s3, "commit": "conditional_put"}}).s3)[key] == (
        "dev.clickrec.delta.storage.S3ConditionalPutLogStore"
    )
    assert s3a_conf(build_config({"s3": {**s3, "commit": "single_writer"}}).s3)[key] == (
        "io.delta.storage.S3SingleDriverLogStore"
    )
    # and it reaches the session's conf (the SparkConf, where Delta reads it)
    conf = session_conf(build_config({"s3": {**s3, "commit": "single_writer"}}))
    assert conf[key] == "io.delta.storage.S3SingleDriverLogStore"
    assert key not in s3a_conf(build_config({}).s3)  # no endpoint: no s3a settings at all


def _artifact(name: str) -> str:
    return re.sub(r"-\d[\w.]*(-[A-Za-z]+)?\.jar$", "", name)


def test_no_artifact_is_on_the_classpath_twice() -> None:
    """The cached jars must not shadow a jar of the pyspark wheel at another version."""
    import pyspark

    wheel = {_artifact(p.name) for p in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    cached = {_artifact(p.name) for p in paths.jars_dir("spark").glob("*.jar")}
    assert cached, "no cached jars: run make setup"
    assert not (wheel & cached)


def test_jvm_options_add_to_what_spark_submit_was_given() -> None:
    # The spark-operator hands executors its Prometheus agent in extraJavaOptions; the
    # builder's value would replace it, so the factory appends instead.
    agent = "-javaagent:/prometheus/jmx_prometheus_javaagent.jar=8090:/etc/metrics/conf/prometheus.yaml"
    conf = session_conf(build_config({}), launched={"spark.executor.extraJavaOptions": agent})
    assert conf["spark.executor.extraJavaOptions"] == f"{agent} -Duser.timezone=UTC"
    assert conf["spark.driver.extraJavaOptions"] == "-Duser.timezone=UTC"
    own = session_conf(build_config({"spark": {"conf": {"spark.executor.extraJavaOptions": "-XX:+UseG1GC"}}}))
    assert own["spark.executor.extraJavaOptions"] == "-XX:+UseG1GC -Duser.timezone=UTC"


@pytest.mark.parametrize(
    ("master", "launched", "root", "default_fs", "staging"),
    [
        # executors in other pods: MLflow's Spark flavor stages models on the lake's store
        (None, "k8s://https://10.0.0.1:443", "s3a://clickrec/lake", "s3a://clickrec", "s3a://clickrec/lake/_tmp/mlflow"),
        ("spark://host:7077", None, "s3a://shop-data/lakes/prod/", "s3a://shop-data", "s3a://shop-data/lakes/prod/_tmp/mlflow"),
        # one JVM: its disk is the executors' disk, nothing changes
        ("local[2]", None, "s3a://clickrec/lake", None, None),
        (None, "local[*]", "s3a://clickrec/lake", None, None),
        (None, None, "s3a://clickrec/lake", None, None),  # PySpark's default master is local[*]
        # a lake on a local disk has no store to share
        (None, "k8s://https://10.0.0.1:443", "/data/lake", None, None),
        (None, "k8s://https://10.0.0.1:443", "file:///data/lake", None, None),
    ],
)
def test_under_a_cluster_master_the_lakes_store_is_the_default_filesystem(
    master: str | None, launched: str | None, root: str, default_fs: str | None, staging: str | None
) -> None:
    from clickrec.spark import effective_master, model_staging_dir

    config = build_config({"spark": {"master": master}, "lake": {"root": root}})
    submitted = {"spark.master": launched} if launched else {}
    conf = session_conf(config, launched=submitted)
    assert conf.get("spark.hadoop.fs.defaultFS") == default_fs
    assert model_staging_dir(config, effective_master(config, submitted)) == staging
