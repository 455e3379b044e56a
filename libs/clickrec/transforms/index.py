"""Stable int ids for ALS: silver/user_index and silver/item_index (source_id -> idx).

The index tables are append-only: assign_new_ids returns only the rows to append, numbered
after the largest id already given, so an id never changes once given.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from clickrec import columns as C


def assign_new_ids(
    keys_df: DataFrame,
    index_df: DataFrame,
    *,
    key_col: str,
    source_col: str = C.SOURCE_ID,
    idx_col: str = C.IDX,
) -> DataFrame:
    """Rows (source_id, idx) for the keys of `keys_df` that `index_df` does not hold yet.

    New ids are dense and unique: max existing idx + 1, + 2, ... in source_id order (so the
    same inputs always get the same ids). Null keys get no id. Returns an empty frame when
    every key is known.

    The ids come without moving all new keys into one partition, as a window over the whole
    frame would: sorting the keys range-partitions them (every key of partition p sorts before
    those of partition p + 1) and sorts each partition; the rows of each partition are counted,
    and a key's id counts the keys of the partitions before its own and those before it in its
    own.

    Reads `index_df` and the keys when called (Spark jobs). The returned frame reads the
    numbered keys from a local checkpoint on the executors, so every read of it sees the
    partitions that were counted: a sort planned again would sample its range bounds again and
    could split the keys otherwise. An executor lost before the frame is read fails that read
    (a local checkpoint is not recomputed) instead of numbering the keys again.
    """
    new_keys = (
        keys_df.select(F.col(key_col).cast("string").alias(source_col))
        .where(F.col(source_col).isNotNull())
        .distinct()
        .join(index_df.select(source_col), on=source_col, how="left_anti")
    )
    # The first action below, the count, fills the checkpoint; later ones read it.
    placed = (
        new_keys.orderBy(source_col)
        .select(source_col, F.spark_partition_id().alias("_part"), F.monotonically_increasing_id().alias("_row"))
        .localCheckpoint(eager=False)
    )
    parts = placed.groupBy("_part").agg(F.count(F.lit(1)).alias("n"), F.min("_row").alias("first")).collect()
    top = index_df.agg(F.max(idx_col)).first()
    next_id = 0 if top is None or top[0] is None else int(top[0]) + 1
    # monotonically_increasing_id numbers the rows of a partition one after another (the row's
    # number in its partition is the id's lower 33 bits), so a row's id is its partition's first
    # id plus its distance from the partition's first row.
    shift: list[Column] = []
    for part in sorted(parts, key=lambda r: int(r["_part"])):
        shift += [F.lit(int(part["_part"])), F.lit(next_id - int(part["first"]))]
        next_id += int(part["n"])
    shifts = F.create_map(*shift).cast("map<int,bigint>")
    return placed.select(source_col, (F.col("_row") + shifts[F.col("_part")]).cast("int").alias(idx_col))


def attach_ids(
    interactions_df: DataFrame,
    user_index_df: DataFrame,
    item_index_df: DataFrame,
    *,
    user_col: str = C.USER_ID,
    item_col: str = C.ITEM_ID,
    user_idx_col: str = C.USER_IDX,
    item_idx_col: str = C.ITEM_IDX,
    source_col: str = C.SOURCE_ID,
    idx_col: str = C.IDX,
) -> DataFrame:
    """Add user_idx and item_idx (the ints ALS trains on) from the two index tables."""
    users = user_index_df.select(F.col(source_col).alias(user_col), F.col(idx_col).alias(user_idx_col))
    items = item_index_df.select(F.col(source_col).alias(item_col), F.col(idx_col).alias(item_idx_col))
    return interactions_df.join(users, on=user_col, how="left").join(items, on=item_col, how="left")


def number_new_keys(keys: Iterable[str | None], known: Iterable[str], max_idx: int | None) -> list[tuple[str, int]]:
    """assign_new_ids for a handful of keys held in memory (the stream's micro-batches).

    The same rule without a Spark job: keys not in `known`, nulls dropped, numbered
    max_idx + 1, + 2, ... in source_id order (code-point order, which is Spark's binary
    UTF-8 string order).
    """
    fresh = sorted({k for k in keys if k is not None} - set(known))
    start = -1 if max_idx is None else max_idx
    return [(key, start + n) for n, key in enumerate(fresh, start=1)]
