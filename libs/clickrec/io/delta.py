"""Delta Lake I/O: table paths, versions, idempotent MERGE. No transformation logic here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from clickrec.config import ClickrecConfig

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def table_path(config: ClickrecConfig, table: str) -> str:
    """Return the location of `table` (e.g. "silver/interactions") under lake.root."""
    root = config.lake.root.rstrip("/")
    if "://" not in root:
        from pathlib import Path

        root = str(Path(root).resolve())
    return f"{root}/{table}"


def table_exists(spark: SparkSession, path: str) -> bool:
    """True when `path` holds a Delta table."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def table_version(spark: SparkSession, path: str) -> int | None:
    """Latest Delta version of the table at `path`, or None when there is no table."""
    from delta.tables import DeltaTable

    if not table_exists(spark, path):
        return None
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return int(row["version"]) if row is not None else None


def merge_upsert(
    spark: SparkSession,
    source_df: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    partition_by: Sequence[str] = (),
) -> None:
    """Upsert `source_df` into the table at `path` by `keys`; create it on first write.

    Rows whose values already equal the target's are left alone, so rerunning the same MERGE
    rewrites nothing and the table content stays the same.
    """
    from delta.tables import DeltaTable

    if not table_exists(spark, path):
        writer = source_df.write.format("delta").mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.save(path)
        return
    target = DeltaTable.forPath(spark, path)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    value_cols = [c for c in source_df.columns if c not in keys]
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in value_cols) or "false"
    (
        target.alias("t")
        .merge(source_df.alias("s"), on)
        .whenMatchedUpdate(condition=changed, set={c: f"s.`{c}`" for c in value_cols})
        .whenNotMatchedInsertAll()
        .execute()
    )


def append_once(
    df: DataFrame,
    path: str,
    *,
    app_id: str,
    version: int = 1,
    partition_by: Sequence[str] = (),
) -> None:
    """Append `df` to the Delta table at `path` at most once per (app_id, version).

    Delta's idempotent writes (txnAppId/txnVersion) make a retried or rerun write with the same
    key a no-op, so a job killed after this commit and run again adds nothing twice. Creates
    the table on first write.
    """
    writer = (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", str(version))
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def append(df: DataFrame, path: str, *, partition_by: Sequence[str] = ()) -> None:
    """Append `df` to the Delta table at `path` (created on first write)."""
    writer = df.write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def read_table(spark: SparkSession, path: str) -> DataFrame:
    """The Delta table at `path` as a DataFrame (latest version)."""
    return spark.read.format("delta").load(path)


def count_rows(spark: SparkSession, path: str) -> int:
    """Rows in the Delta table at `path`, 0 when it does not exist."""
    if not table_exists(spark, path):
        return 0
    return int(read_table(spark, path).count())
