"""Small Delta reads and writes with delta-rs (`deltalake`), for the stream's micro-batches.

A Spark Delta MERGE or append costs one to two seconds of fixed work (jobs, stats, snapshot
update) however few rows it touches; delta-rs does the same commit on a few hundred rows in
tens of milliseconds. The stream's micro-batches touch few rows and must be fresh within
seconds, so they read and write the existing tables here; the batch jobs keep Spark. Both
write the same Delta protocol (the tables Spark creates are reader 1 / writer 2, and
gold/recommendations writer 7 with the changeDataFeed feature: delta-rs writes its change
files on MERGE, UPDATE and DELETE as Spark does), and both
commit optimistically: a conflicting concurrent commit fails and is retried by the caller.
Tables are created by the Spark jobs and opened with clickrec.io.lake.Lake.open, which gives
the DeltaTable its storage options; writes through it use them (write_deltalake given a
DeltaTable writes with the table's own object store).

The twin of clickrec.io.delta (Spark): merge_upsert, insert_unless_taken, append_once and
append take the same arguments in the same order, (target, data, *, options), and do the same
thing; here the target is an open DeltaTable and the data an Arrow table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from clickrec.io.delta import changed_condition

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


def _partition_by(dt: DeltaTable) -> list[str] | None:
    return dt.metadata().partition_columns or None


def append_once(dt: DeltaTable, data: pa.Table, *, app_id: str, version: int) -> bool:
    """Append `data` in one commit tagged (app_id, version); False when that commit exists already.

    The Delta equivalent of Spark's txnAppId/txnVersion: a replayed micro-batch finds its
    version recorded and appends nothing.
    """
    from deltalake import CommitProperties, Transaction, write_deltalake

    done = dt.transaction_version(app_id)
    if done is not None and done >= version:
        return False
    write_deltalake(dt, conform(data, dt), mode="append", partition_by=_partition_by(dt),
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, version)]))
    return True


def append(dt: DeltaTable, data: pa.Table) -> None:
    """Blind append of `data` (callers make it idempotent by appending only what is missing)."""
    from deltalake import write_deltalake

    write_deltalake(dt, conform(data, dt), mode="append", partition_by=_partition_by(dt))


def merge_upsert(dt: DeltaTable, data: pa.Table, *, keys: Sequence[str], update_when: str | None = None,
                 target_filter: str | None = None) -> dict[str, Any]:
    """Upsert `data` into `dt` by `keys`; returns delta-rs' merge metrics.

    Rows whose values already equal the target's are left alone (their files are not
    rewritten), so rerunning the same MERGE rewrites nothing and the table content stays the
    same. `update_when` (SQL over t and s) further limits which matched rows are updated,
    checked against the snapshot the MERGE writes to; `target_filter` (SQL over t, e.g. a
    partition) narrows what the MERGE reads, so commits elsewhere in the table do not conflict
    with it.
    """
    predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    if target_filter:
        predicate = f"({target_filter}) AND {predicate}"
    source = conform(data, dt)
    value_cols = [c for c in source.column_names if c not in keys]
    return dict(
        dt.merge(source, predicate, source_alias="s", target_alias="t")
        .when_matched_update_all(predicate=changed_condition(value_cols, update_when))
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
