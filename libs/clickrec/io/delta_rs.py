"""Small Delta reads and writes with delta-rs (`deltalake`), for the stream's micro-batches.

A Spark Delta MERGE or append costs one to two seconds of fixed work (jobs, stats, snapshot
update) however few rows it touches; delta-rs does the same commit on a few hundred rows in
tens of milliseconds. The stream's micro-batches touch few rows and must be fresh within
seconds, so they read and write the existing tables here; the batch jobs keep Spark. Both
write the same Delta protocol (the tables Spark creates are reader 1 / writer 2), and both
commit optimistically: a conflicting concurrent commit fails and is retried by the caller.
Tables are created by the Spark jobs and opened with clickrec.io.delta_reader.open_table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickrec.config import ClickrecConfig
from clickrec.io.delta_reader import storage_options

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable


def conform(data: pa.Table, dt: DeltaTable) -> pa.Table:
    """`data` with the table's columns, in its order and types (Spark and arrow types differ)."""
    import pyarrow as pa

    schema = pa.schema(dt.schema().to_arrow())
    return data.select(schema.names).cast(schema)


def sql_string(value: str) -> str:
    """`value` as a SQL string literal (quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def query(dt: DeltaTable, sql: str) -> pa.Table:
    """Run `sql` over `dt` registered as table `t` with delta-rs' own engine (DataFusion).

    Not pyarrow's dataset filter: files written by delta-rs carry string_view in their arrow
    schema, and pyarrow cannot prune those against Spark's plain strings.
    """
    import pyarrow as pa
    from deltalake import QueryBuilder

    return pa.table(QueryBuilder().register("t", dt).execute(sql))


def read_where_in(dt: DeltaTable, column: str, values: Sequence[str], columns: Sequence[str]) -> pa.Table:
    """`columns` of the rows whose `column` is one of `values` (strings), in the table's types."""
    import pyarrow as pa

    schema = pa.schema(dt.schema().to_arrow())
    wanted = pa.schema([schema.field(c) for c in columns])
    if not values:
        return wanted.empty_table()
    select = ", ".join(f'"{c}"' for c in columns)
    found = query(dt, f'SELECT {select} FROM t WHERE "{column}" IN ({", ".join(sql_string(v) for v in values)})')
    return found.select(list(columns)).cast(wanted)


def max_value(dt: DeltaTable, column: str) -> int | None:
    """The largest value of a numeric column (None for an empty table)."""
    return query(dt, f'SELECT max("{column}") AS m FROM t').column("m")[0].as_py()


def append_once(config: ClickrecConfig, dt: DeltaTable, data: pa.Table, *, app_id: str, version: int) -> bool:
    """Append `data` in one commit tagged (app_id, version); False when that commit exists already.

    The Delta equivalent of Spark's txnAppId/txnVersion: a replayed micro-batch finds its
    version recorded and appends nothing.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake

    done = dt.transaction_version(app_id)
    if done is not None and done >= version:
        return False
    write_deltalake(
        dt, conform(data, dt), mode="append", partition_by=dt.metadata().partition_columns or None,
        storage_options=storage_options(config) or None,
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id, version)]),
    )
    return True


def append(config: ClickrecConfig, dt: DeltaTable, data: pa.Table) -> None:
    """Blind append of `data` (callers make it idempotent by appending only what is missing)."""
    from deltalake import write_deltalake

    write_deltalake(dt, conform(data, dt), mode="append", partition_by=dt.metadata().partition_columns or None,
                    storage_options=storage_options(config) or None)


def merge_upsert(dt: DeltaTable, data: pa.Table, *, keys: Sequence[str], update_when: str | None = None,
                 target_filter: str | None = None) -> dict[str, Any]:
    """Upsert `data` on `keys`: matched rows are replaced, new rows inserted; returns the metrics.

    `update_when` (SQL over t and s) limits which matched rows are replaced; `target_filter`
    (SQL over t, e.g. a partition) narrows what the MERGE reads, so commits to other
    partitions do not conflict with it.
    """
    predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    if target_filter:
        predicate = f"({target_filter}) AND {predicate}"
    return dict(
        dt.merge(conform(data, dt), predicate, source_alias="s", target_alias="t")
        .when_matched_update_all(predicate=update_when)
        .when_not_matched_insert_all()
        .execute()
    )


def insert_unless_taken(dt: DeltaTable, data: pa.Table, *, unique: Sequence[str],
                        target_filter: str | None = None) -> int:
    """Insert the rows of `data` whose value in every `unique` column is new to the table.

    A MERGE, not a blind append, so a concurrent commit fails it with CommitFailedError instead
    of letting both writers add the same id; rows colliding with committed ones are skipped.
    `target_filter` (SQL over t) limits the rows that can collide. Returns how many it inserted.
    """
    predicate = " OR ".join(f"t.`{c}` = s.`{c}`" for c in unique)
    predicate = f"({target_filter}) AND ({predicate})" if target_filter else predicate
    metrics = (
        dt.merge(conform(data, dt), predicate, source_alias="s", target_alias="t")
        .when_not_matched_insert_all()
        .execute()
    )
    return int(metrics.get("num_target_rows_inserted", 0))
