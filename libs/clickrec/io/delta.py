"""Delta Lake I/O with Spark: versions, reads, idempotent MERGE and appends. No transformation logic.

The twin of clickrec.io.delta_rs: the writes both engines have (merge_upsert, insert_unless_taken,
append_once, append) take the same arguments in the same order, (target, data, *, options), and
do the same thing; here the target is the table's path (clickrec.io.lake.Lake.path) and the data
a Spark DataFrame, there an open delta-rs DeltaTable and an Arrow table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def table_exists(spark: SparkSession, path: str) -> bool:
    """True when `path` holds a Delta table.

    isDeltaTable answers from the session's cached DeltaLog of the path, which does not see a
    table another process (the stream, an ingest) created after this session first looked at
    it, e.g. during its own losing attempt to create it. So a "no" is checked by reading the
    table, which brings that log up to date.
    """
    from delta.tables import DeltaTable
    from pyspark.errors import AnalysisException

    if DeltaTable.isDeltaTable(spark, path):
        return True
    try:
        spark.read.format("delta").load(path)
    except AnalysisException:
        return False
    return True


def table_version(spark: SparkSession, path: str) -> int | None:
    """Latest Delta version of the table at `path`, or None when there is no table."""
    from delta.tables import DeltaTable

    if not table_exists(spark, path):
        return None
    row = DeltaTable.forPath(spark, path).history(1).select("version").first()
    return int(row["version"]) if row is not None else None


def changed_condition(value_cols: Sequence[str], update_when: str | None = None) -> str:
    """SQL over t and s: a matched row differs in a value column (nulls equal), and `update_when` holds."""
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in value_cols) or "false"
    return f"({changed}) AND ({update_when})" if update_when else changed


def in_dates(column: str, dates: Iterable[date | str], *, alias: str) -> str:
    """SQL over `alias` that both engines read: `column` (a date) is one of `dates`."""
    values = ", ".join(f"CAST('{d}' AS DATE)" for d in sorted({str(d) for d in dates}))
    return f"{alias}.`{column}` IN ({values})"


def merge_upsert(
    path: str,
    source_df: DataFrame,
    *,
    keys: Sequence[str],
    update_when: str | None = None,
    target_filter: str | None = None,
    partition_by: Sequence[str] = (),
    properties: Mapping[str, str] | None = None,
) -> None:
    """Upsert `source_df` into the table at `path` by `keys`; create it on first write.

    Rows whose values already equal the target's are left alone, so rerunning the same MERGE
    rewrites nothing and the table content stays the same. `update_when` (SQL over t and s)
    further limits which matched rows are updated, checked against the snapshot the MERGE
    writes to (e.g. "the source row is newer"); `target_filter` (SQL over t, e.g. a partition)
    narrows what the MERGE reads, so commits elsewhere in the table do not conflict with it.
    `partition_by` and the table `properties` apply when the table is created.
    """
    from delta.tables import DeltaTable

    spark = source_df.sparkSession
    if not table_exists(spark, path):
        create(path, source_df, partition_by=partition_by, properties=properties)
        return
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    if target_filter:
        on = f"({target_filter}) AND {on}"
    value_cols = [c for c in source_df.columns if c not in keys]
    (
        DeltaTable.forPath(spark, path).alias("t")
        .merge(source_df.alias("s"), on)
        .whenMatchedUpdate(condition=changed_condition(value_cols, update_when),
                           set={c: f"s.`{c}`" for c in value_cols})
        .whenNotMatchedInsertAll()
        .execute()
    )


_DELETE_FLAG = "_clickrec_delete"


def merge_changes(
    path: str,
    source_df: DataFrame,
    *,
    keys: Sequence[str],
    partition_by: Sequence[str] = (),
    ignore_changes: Sequence[str] = (),
    delete_unmatched_where: str | None = None,
    keep_where: str | None = None,
    target_filter: str | None = None,
    properties: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Make the table at `path` hold `source_df`'s rows by `keys`, committing only differences.

    Like merge_upsert, but the difference is computed first: source rows that are new or differ
    from the target (ignoring the `ignore_changes` columns, e.g. an updated_at stamp) are
    upserted, and target rows matching `delete_unmatched_where` (SQL on the target, alias `t`)
    whose keys are not in the source are deleted, in one MERGE. When nothing differs there is
    no commit at all, so a rerun leaves the table, its version and its files as they were.
    `keep_where` (SQL over t and s) keeps a matched target row even when it differs;
    `target_filter` (SQL over t, e.g. one partition) narrows what the MERGE reads, so commits
    elsewhere in the table do not conflict with it. Returns {"upserted", "deleted",
    "committed"} as computed before the MERGE. Creates the table on first write (with
    `partition_by` and the table `properties`).
    """
    from delta.tables import DeltaTable
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = source_df.sparkSession
    if not table_exists(spark, path):
        create(path, source_df, partition_by=partition_by, properties=properties)
        return {"upserted": int(source_df.count()), "deleted": 0, "committed": 1}
    target_df = read_table(spark, path)
    value_cols = [c for c in source_df.columns if c not in keys]
    compared = [*keys, *(c for c in value_cols if c not in ignore_changes)]
    same = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in compared)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    unchanged = f"({same}) OR ({on} AND ({keep_where}))" if keep_where else same
    changed = (
        source_df.alias("s").join(target_df.alias("t"), F.expr(unchanged), "left_anti")
        .withColumn(_DELETE_FLAG, F.lit(False))
    )
    diff = changed
    if delete_unmatched_where is not None:
        gone = (
            target_df.alias("t").where(delete_unmatched_where)
            .join(source_df.alias("s"), F.expr(on), "left_anti")
            .select(*(F.col(f"t.`{k}`").alias(k) for k in keys),
                    *(F.lit(None).cast(source_df.schema[c].dataType).alias(c) for c in value_cols))
            .withColumn(_DELETE_FLAG, F.lit(True))
        )
        diff = changed.unionByName(gone)
    diff = diff.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {r[_DELETE_FLAG]: int(r["count"]) for r in diff.groupBy(_DELETE_FLAG).count().collect()}
        upserted, deleted = counts.get(False, 0), counts.get(True, 0)
        if upserted == 0 and deleted == 0:
            return {"upserted": 0, "deleted": 0, "committed": 0}
        (
            DeltaTable.forPath(spark, path).alias("t")
            .merge(diff.alias("s"), f"({target_filter}) AND {on}" if target_filter else on)
            # The rules again, on the rows the MERGE finds: a concurrent writer may have
            # committed between the read above and the MERGE's own snapshot.
            .whenMatchedDelete(condition=f"s.`{_DELETE_FLAG}` AND ({delete_unmatched_where or 'false'})")
            .whenMatchedUpdate(condition=f"NOT s.`{_DELETE_FLAG}` AND NOT ({keep_where or 'false'})",
                               set={c: f"s.`{c}`" for c in value_cols})
            .whenNotMatchedInsert(condition=f"NOT s.`{_DELETE_FLAG}`",
                                  values={c: f"s.`{c}`" for c in source_df.columns})
            .execute()
        )
    finally:
        diff.unpersist()
    return {"upserted": upserted, "deleted": deleted, "committed": 1}


def create(path: str, df: DataFrame, *, partition_by: Sequence[str] = (),
           properties: Mapping[str, str] | None = None) -> None:
    """Create the table at `path` holding `df`; fails when a table is there already.

    `properties` are Delta table properties (e.g. clickrec.columns.TABLE_PROPERTIES'), set in
    the table's first commit: Delta takes `delta.*` writer options as table properties when it
    creates a table, and raises the protocol a property needs (the change data feed: writer 7
    with the changeDataFeed feature).
    """
    writer = df.write.format("delta").mode("errorifexists")
    for key, value in (properties or {}).items():
        writer = writer.option(key, value)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def insert_unless_taken(path: str, source_df: DataFrame, *, unique: Sequence[str],
                        target_filter: str | None = None) -> int:
    """Insert the rows of `source_df` whose value in every `unique` column is new to the table.

    A MERGE, not a blind append: it reads the table, so Delta fails it (a conflict exception)
    when a concurrent commit added rows, and it skips a row that collides with a row already
    committed. `target_filter` (SQL over t) limits the rows that can collide (and what the
    MERGE reads and compares). Returns how many rows it inserted.
    """
    from delta.tables import DeltaTable

    on = " OR ".join(f"t.`{c}` = s.`{c}`" for c in unique)
    on = f"({target_filter}) AND ({on})" if target_filter else on
    metrics = (
        DeltaTable.forPath(source_df.sparkSession, path).alias("t")
        .merge(source_df.alias("s"), on)
        .whenNotMatchedInsertAll()
        .execute()
        .first()
    )
    return int(metrics["num_inserted_rows"]) if metrics is not None else 0


def append_once(
    path: str,
    df: DataFrame,
    *,
    app_id: str,
    version: int,
    partition_by: Sequence[str] = (),
) -> None:
    """Append `df` to the Delta table at `path` at most once per (app_id, version).

    Delta's idempotent writes (txnAppId/txnVersion) make a retried or rerun write with the same
    key a no-op, so a job killed after this commit and run again adds nothing twice. Creates
    the table on first write. Unlike delta_rs.append_once it cannot say whether it skipped:
    Spark drops a recorded (app_id, version) without a sign.
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


def append(path: str, df: DataFrame, *, partition_by: Sequence[str] = ()) -> None:
    """Append `df` to the Delta table at `path` (created on first write)."""
    writer = df.write.format("delta").mode("append")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def read_table(spark: SparkSession, path: str, *, version: int | None = None) -> DataFrame:
    """The Delta table at `path` as a DataFrame (latest version, or `version` by time travel)."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def count_rows(spark: SparkSession, path: str) -> int:
    """Rows in the Delta table at `path`, 0 when it does not exist."""
    if not table_exists(spark, path):
        return 0
    return int(read_table(spark, path).count())


def last_operation_metrics(spark: SparkSession, path: str) -> dict[str, str]:
    """operationMetrics of the latest commit of the table at `path` (e.g. numOutputRows)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forPath(spark, path).history(1).select("operationMetrics").first()
    return dict(row["operationMetrics"] or {}) if row is not None else {}
