"""The one Spark session factory: Delta, the jars cached by `make setup`, S3A from config.

Nothing is fetched with `spark.jars.packages`: the jars must already be in `spark.jars_dir`
(or on the classpath, as in the Kubernetes image), otherwise SetupError says to run setup.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from clickrec import paths
from clickrec.config import ClickrecConfig, S3Config
from clickrec.errors import SetupError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"

# Jars that must be in the cache: Delta, the Kafka source, S3A and clickrec's LogStore.
REQUIRED_JAR_PREFIXES: tuple[str, ...] = (
    "clickrec-logstore-",
    "delta-spark_",
    "delta-storage-",
    "spark-sql-kafka-0-10_",
    "kafka-clients-",
    "hadoop-aws-",
    "bundle-",
)


def resolve_jars_dir(jars_dir: str | None) -> Path | None:
    """Return the absolute jar folder for a config value (relative paths: the project root)."""
    if jars_dir is None:
        return None
    path = Path(jars_dir)
    if not path.is_absolute():
        path = paths.project_root() / path
    return path


def cached_jars(jars_dir: Path) -> list[Path]:
    """List the cached jars, failing with a clear message when setup has not run."""
    jars = sorted(jars_dir.glob("*.jar")) if jars_dir.is_dir() else []
    names = [j.name for j in jars]
    missing = [p for p in REQUIRED_JAR_PREFIXES if not any(n.startswith(p) for n in names)]
    if missing:
        raise SetupError(
            f"the JVM jars are not cached in {jars_dir} (missing {', '.join(missing)}): "
            "run `make setup` once; jobs and tests never download them"
        )
    return jars


# Delta's LogStore for s3a paths, by s3.commit (docs/concurrency.md). conditional_put: clickrec's
# own (jvm/logstore), whose commit is a PUT with If-None-Match: *, so a writer that lost the race
# for a version gets FileAlreadyExistsException and Delta retries or reports the conflict, as
# delta-rs does on the same files. single_writer: Delta's default for S3, safe for one writer only.
LOG_STORES: dict[str, str] = {
    "conditional_put": "dev.clickrec.delta.storage.S3ConditionalPutLogStore",
    "single_writer": "io.delta.storage.S3SingleDriverLogStore",
}


def s3a_conf(s3: S3Config) -> dict[str, str]:
    """Build the Hadoop S3A options for `s3`; credentials only from the environment."""
    if s3.endpoint is None:
        return {}
    conf = {
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": s3.endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": s3.region,
        "spark.hadoop.fs.s3a.path.style.access": str(s3.path_style_access).lower(),
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(s3.ssl_enabled).lower(),
        "spark.delta.logStore.s3a.impl": LOG_STORES[s3.commit],
    }
    creds = s3.credentials()
    if creds is not None:
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        )
        conf["spark.hadoop.fs.s3a.access.key"] = creds[0]
        conf["spark.hadoop.fs.s3a.secret.key"] = creds[1]
    return conf


def apply_s3a(spark: SparkSession, s3: S3Config) -> None:
    """Set the S3A options on a running session's Hadoop conf.

    For sessions built before the endpoint was known (a notebook, the test suite, where MinIO
    starts after Spark). Takes effect for buckets not touched yet. Delta picks its LogStore
    from the SparkConf, not the SQL conf, so `spark.delta.logStore.*` is set on both.
    """
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    spark_conf = spark.sparkContext._jsc.sc().conf()
    for key, value in s3a_conf(s3).items():
        if key.startswith("spark.hadoop."):
            hadoop_conf.set(key[len("spark.hadoop.") :], value)
        else:
            spark.conf.set(key, value)
            spark_conf.set(key, value)


def is_local_master(master: str | None) -> bool:
    """True for `local`, `local[N]`, `local[*]` and `local[N,F]`: everything in one JVM."""
    return master is not None and (master == "local" or master.startswith("local["))


def shared_filesystem(config: ClickrecConfig, master: str) -> str | None:
    """The lake's store as the Hadoop default filesystem, when driver and executors do not share a disk.

    MLflow's Spark flavor saves and loads a model through a temporary folder on the default
    filesystem (its `dfs_tmpdir`, MLFLOW_DFS_TMP): executors write the factor files there and
    the driver copies them to and from MLflow. With `file:` as the default and executors in
    other pods, each writes to its own disk: a logged model misses its factors, and a loaded one
    cannot be read. So under a cluster master (not `local[...]`) with the lake on an object
    store, the default filesystem is the lake's bucket (`s3a://clickrec` for
    `s3a://clickrec/lake`). None otherwise.
    """
    if is_local_master(master):
        return None
    scheme, sep, rest = config.lake.root.partition("://")
    if not sep or scheme == "file":
        return None
    return f"{scheme}://{rest.split('/', 1)[0]}"


def model_staging_dir(config: ClickrecConfig, master: str) -> str | None:
    """Where MLflow stages Spark models (MLFLOW_DFS_TMP) under a cluster master: `<lake>/_tmp/mlflow`."""
    if shared_filesystem(config, master) is None:
        return None
    return config.lake.root.rstrip("/") + "/_tmp/mlflow"


def effective_master(config: ClickrecConfig, launched: Mapping[str, str]) -> str:
    """The master the session runs on: the config's, else spark-submit's, else PySpark's `local[*]`."""
    return config.spark.master or launched.get("spark.master") or "local[*]"


_JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")
_UTC_JAVA_OPTION = "-Duser.timezone=UTC"


def session_conf(config: ClickrecConfig, launched: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every Spark option the factory sets, as a dict (testable without a JVM).

    `launched`: the conf spark-submit started the JVM with. The builder's values replace
    those, so JVM options are appended to them instead: the spark-operator passes its
    Prometheus agent (and a user's `javaOptions`) to executors in extraJavaOptions.
    """
    sc = config.spark
    launched = launched or {}
    conf: dict[str, str] = {
        "spark.app.name": sc.app_name,
        "spark.ui.enabled": str(sc.ui_enabled).lower(),
        "spark.sql.shuffle.partitions": str(sc.shuffle_partitions),
        # Delta reads its log with 50 tasks by default; tie it to the cluster's parallelism.
        "spark.databricks.delta.snapshotPartitions": str(sc.shuffle_partitions),
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.adaptive.enabled": "true",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Bronze is append-only with small batches; keep Delta's logs compact.
        "spark.databricks.delta.optimizeWrite.enabled": "false",
        "spark.sql.streaming.stopGracefullyOnShutdown": "true",
    }
    if sc.master is not None:
        conf["spark.master"] = sc.master
    if sc.driver_memory is not None:
        conf["spark.driver.memory"] = sc.driver_memory
    jars_dir = resolve_jars_dir(sc.jars_dir)
    jars = [str(j) for j in cached_jars(jars_dir)] if jars_dir is not None else []
    local = is_local_master(sc.master)
    if jars and not local:
        conf["spark.jars"] = ",".join(jars)
    conf.update(s3a_conf(config.s3))
    default_fs = shared_filesystem(config, effective_master(config, launched))
    if default_fs is not None:
        conf["spark.hadoop.fs.defaultFS"] = default_fs
    conf.update(sc.conf)
    for key in _JAVA_OPTIONS:
        parts = (launched.get(key), sc.conf.get(key), _UTC_JAVA_OPTION)
        conf[key] = " ".join(dict.fromkeys(p.strip() for p in parts if p and p.strip()))
    if jars and local:
        # Driver and executors share one JVM, so the jars go on its classpath (after the
        # user's own entries). `spark.jars` would copy each into the session's temp dir (the
        # AWS SDK bundle alone is 686 MB) on every start, left behind when a job is killed.
        own = sc.conf.get("spark.driver.extraClassPath")
        conf["spark.driver.extraClassPath"] = os.pathsep.join([own, *jars] if own else jars)
    return conf


def checkpoint_dir(config: ClickrecConfig) -> str:
    """Absolute checkpoint folder (local paths resolved against the working directory)."""
    value = config.spark.checkpoint_dir
    if "://" in value:
        return value
    return str(Path(value).resolve())


def _require_delta_on_launched_jvm() -> None:
    """Fail clearly when spark-submit started the JVM without the Delta jars.

    Under spark-submit the JVM is up before the job reads its config, so the factory cannot
    put the cached jars on its classpath any more; without this check the job dies later on
    a ClassNotFoundException. (The Kubernetes image has them in /opt/spark/jars.)
    """
    from py4j.protocol import Py4JJavaError
    from pyspark import SparkContext

    if "PYSPARK_GATEWAY_PORT" not in os.environ or SparkContext._active_spark_context is not None:
        return
    SparkContext._ensure_initialized()
    try:
        # Through the context class loader, where spark-submit puts --jars too.
        loader = SparkContext._jvm.java.lang.Thread.currentThread().getContextClassLoader()  # type: ignore[union-attr]
        loader.loadClass(DELTA_EXTENSION)
    except Py4JJavaError as exc:
        raise SetupError(
            f"spark-submit started the JVM without Delta ({DELTA_EXTENSION} not found): pass the "
            "jars cached by `make setup`, e.g. spark-submit --driver-class-path "
            "'.cache/jars/spark/*' jobs/<job>.py ... (or --jars with them, comma-separated)"
        ) from exc


def _launched_conf() -> dict[str, str]:
    """The conf of a JVM that spark-submit started (empty when the factory starts it)."""
    from pyspark import SparkConf, SparkContext

    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def use_utc_in_this_process() -> None:
    """Pin this Python process (and the JVM and workers it starts) to UTC.

    PySpark turns naive Python datetimes into timestamps, and timestamps back into naive
    datetimes on collect, with the Python process's local zone, while every timestamp here is
    UTC (the session time zone, the JVM's user.timezone, delta-rs and arrow). On a laptop with
    TZ=Europe/Berlin an `ingested_at` of "now in UTC" would otherwise land an hour early, and a
    suite bound of "2100-01-01 00:00:00" would mean 23:00 the day before.
    """
    if os.environ.get("TZ") != "UTC":
        os.environ["TZ"] = "UTC"
        time.tzset()


def build_spark_session(config: ClickrecConfig) -> SparkSession:
    """Return the Delta-enabled SparkSession described by `config` (getOrCreate)."""
    from pyspark.sql import SparkSession

    use_utc_in_this_process()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    _require_delta_on_launched_jvm()
    builder = SparkSession.builder
    launched = _launched_conf()
    for key, value in session_conf(config, launched=launched).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    staging = model_staging_dir(config, effective_master(config, launched))
    if staging is not None:
        os.environ["MLFLOW_DFS_TMP"] = staging  # read by mlflow.spark's log_model and load_model
    spark.sparkContext.setLogLevel(config.spark.log_level)
    quiet_known_warnings(spark, config.spark.log_level)
    cp = checkpoint_dir(config)
    if "://" not in cp:
        Path(cp).mkdir(parents=True, exist_ok=True)
    spark.sparkContext.setCheckpointDir(cp)
    return spark


_LOG_LEVELS = ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF")

# Loggers whose WARN lines say nothing a user can act on, raised to ERROR:
# - WindowExec's "No Partition Defined for Window operation! Moving all data to a single
#   partition" comes from popular_items' rank of the n most popular items, once per publish: a
#   global row_number over the n rows left by a limit, which are in one partition already.
QUIET_LOGGERS = ("org.apache.spark.sql.execution.window",)


def quiet_known_warnings(spark: SparkSession, log_level: str) -> None:
    """Raise the QUIET_LOGGERS to ERROR (or to spark.log_level when that is stricter)."""
    level = max(log_level, "ERROR", key=_LOG_LEVELS.index)
    jvm = spark.sparkContext._jvm
    log4j = jvm.org.apache.logging.log4j  # type: ignore[union-attr]
    for name in QUIET_LOGGERS:
        log4j.core.config.Configurator.setLevel(name, log4j.Level.toLevel(level))


# netlib (dev.ludovic.netlib), Spark's BLAS, loads the system's libblas.so.3 / liblapack.so.3
# through JNI when they exist, else runs in Java (VectorBLAS on Java 16+, else F2jBLAS). A
# missing library is printed by netlib's native loader itself ("netlib-blas: JNI_OnLoad:
# dlopen(libblas.so.3) failed"), straight to the JVM's stderr: no logger level hides it.
NATIVE_BLAS_PACKAGE = "libopenblas0"  # pulls libopenblas0-pthread, which provides both libraries


def blas_in_use(spark: SparkSession) -> dict[str, str]:
    """Which BLAS and LAPACK netlib loaded in the driver's JVM (where local-mode ALS runs).

    `{"blas": "native (libblas.so.3)" or "java (VectorBLAS)", "lapack": ...}`; asking loads
    netlib if nothing has yet.
    """
    jvm = spark.sparkContext._jvm
    netlib = jvm.dev.ludovic.netlib  # type: ignore[union-attr]
    system = jvm.java.lang.System  # type: ignore[union-attr]
    out = {}
    for kind, instance in (("blas", netlib.blas.BLAS), ("lapack", netlib.lapack.LAPACK)):
        name = str(instance.getInstance().getClass().getSimpleName())
        if name.startswith("JNI"):
            lib = system.getProperty(f"dev.ludovic.netlib.{kind}.nativeLibPath") or system.getProperty(
                f"dev.ludovic.netlib.{kind}.nativeLib") or f"lib{kind}.so.3"
            out[kind] = f"native ({lib})"
        else:
            out[kind] = f"java ({name})"
    return out

