"""Stable int ids for ALS: silver/user_index and silver/item_index (source_id -> idx).

The index tables are append-only: assign_new_ids returns only the rows to append, numbered
after the largest id already given, so an id never changes once given.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame, Window
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
    """
    new_keys = (
        keys_df.select(F.col(key_col).cast("string").alias(source_col))
        .where(F.col(source_col).isNotNull())
        .distinct()
        .join(index_df.select(source_col), on=source_col, how="left_anti")
    )
    offset = index_df.agg(F.coalesce(F.max(idx_col), F.lit(-1)).cast("long").alias("_offset"))
    numbered = new_keys.crossJoin(F.broadcast(offset)).withColumn(
        idx_col, (F.col("_offset") + F.row_number().over(Window.orderBy(source_col))).cast("int")
    )
    return numbered.select(source_col, idx_col)


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
