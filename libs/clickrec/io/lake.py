"""The lake: where each table lives for Spark and for delta-rs, and how to open or read it.

Built once from config (`Lake.from_config`) and handed to the jobs and the I/O adapters, so a
table name maps to one Spark path and one delta-rs URI everywhere. The writes live in the two
engine adapters, which name the same operation the same way: clickrec.io.delta (Spark, target
= the table's path) and clickrec.io.delta_rs (delta-rs, target = an open DeltaTable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clickrec.config import ClickrecConfig, LakeConfig, S3Config
from clickrec.errors import TableNotFoundError

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame, SparkSession

INGEST_FIRST = "run `clickrec ingest` first"  # the hint for a missing bronze or silver table


# How delta-rs commits to S3, by s3.commit (docs/concurrency.md). conditional_put: the commit
# file is a PUT with If-None-Match: * (object_store's ETag-based conditional put), the same
# primitive Spark's LogStore uses (clickrec.spark.LOG_STORES); set explicitly so that a change of
# the library's default cannot turn it off. single_writer: copy-and-delete with no check, safe
# for one writer only.
COMMIT_OPTIONS: dict[str, dict[str, str]] = {
    "conditional_put": {"aws_conditional_put": "etag"},
    "single_writer": {"AWS_S3_ALLOW_UNSAFE_RENAME": "true"},
}

# How delta-rs retries a request the store refused or dropped (object_store's RetryConfig).
# Its default gives up within about 2 s (10 retries from 100 ms, backoff growing slowly): MinIO
# down for 10 s failed an ingest at its read of the leases table while Spark's S3A calls rode
# the outage out. At least 1 s before each of 15 retries rides out 15 s or more of refused
# connections; a store that stays down fails the call after a minute at most.
RETRY_OPTIONS: dict[str, str] = {
    "max_retries": "15",
    "retry_timeout": "60s",
    "backoff_config.init_backoff": "1s",
    "backoff_config.max_backoff": "8s",
    "backoff_config.base": "2",
}


def _storage_options(s3: S3Config) -> dict[str, str]:
    """delta-rs storage options for S3/MinIO from config and the environment's credentials."""
    if s3.endpoint is None:
        return {}
    opts = {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_REGION": s3.region,
        "AWS_ALLOW_HTTP": str(not s3.ssl_enabled).lower(),
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": str(not s3.path_style_access).lower(),
        **COMMIT_OPTIONS[s3.commit],
        **RETRY_OPTIONS,
    }
    creds = s3.credentials()
    if creds is not None:
        opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"] = creds
    return opts


@dataclass(frozen=True)
class Lake:
    """The tables under one root: a local folder (made absolute) or an s3a:// prefix."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: ClickrecConfig) -> Lake:
        return cls.of(config.lake, config.s3)

    @classmethod
    def of(cls, lake: LakeConfig, s3: S3Config) -> Lake:
        """The lake at `lake.root`; S3 options (credentials from the environment) read now."""
        root = lake.root.rstrip("/")
        if "://" not in root:
            root = str(Path(root).resolve())
        return cls(root, _storage_options(s3))

    @property
    def local(self) -> bool:
        """True when the tables are files on this machine."""
        return "://" not in self.root

    def path(self, table: str) -> str:
        """Where Spark finds `table` (e.g. "silver/interactions"), or any folder under the root."""
        return f"{self.root}/{table}"

    def uri(self, table: str) -> str:
        """Where delta-rs finds `table`: the Spark path with s3a:// as s3://."""
        path = self.path(table)
        return "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path

    def not_found(self, table: str, *, hint: str | None = None) -> TableNotFoundError:
        """The error for a missing `table`, naming where it was looked for."""
        return TableNotFoundError(table, self.path(table), hint=hint)

    # delta-rs (no JVM): the stream's fast path, status, the service, leases

    def open(self, table: str, version: int | None = None) -> DeltaTable | None:
        """`table` (at `version`, else the latest) opened with delta-rs, or None when it does not exist."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError as DeltaRsTableNotFound

        uri = self.uri(table)
        if self.local and not (Path(uri) / "_delta_log").is_dir():
            return None
        try:
            return DeltaTable(uri, version=version, storage_options=self.storage_options or None)
        except DeltaRsTableNotFound:
            return None

    def require(self, table: str, version: int | None = None, *, hint: str | None = None) -> DeltaTable:
        """Like `open`, but a missing table raises TableNotFoundError (with `hint` in its message)."""
        dt = self.open(table, version)
        if dt is None:
            raise self.not_found(table, hint=hint)
        return dt

    # Spark: the batch jobs

    def exists(self, spark: SparkSession, table: str) -> bool:
        """True when `table` holds a Delta table (asked through Spark)."""
        from clickrec.io import delta

        return delta.table_exists(spark, self.path(table))

    def version(self, spark: SparkSession, table: str) -> int | None:
        """Latest Delta version of `table` (through Spark), None when there is no table."""
        from clickrec.io import delta

        return delta.table_version(spark, self.path(table))

    def require_version(self, spark: SparkSession, table: str, *, hint: str | None = None) -> int:
        """Like `version`, but a missing table raises TableNotFoundError (with `hint` in its message)."""
        version = self.version(spark, table)
        if version is None:
            raise self.not_found(table, hint=hint)
        return version

    def read(self, spark: SparkSession, table: str, version: int | None = None) -> DataFrame:
        """`table` as a Spark DataFrame: the latest version, or `version` by time travel."""
        from clickrec.io import delta

        return delta.read_table(spark, self.path(table), version=version)
