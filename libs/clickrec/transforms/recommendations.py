"""Pure transformations of the publish step: exclusion pairs, id mapping, serving rows, popular list.

The serving table stores a user's list as one `items` array of structs
`(item_id string, score float, rank int)`, rank 1 first. One array of structs (rather than two
parallel arrays) keeps an item, its score and its rank together, so a reader can never pair
them up wrongly, and Delta/Arrow/DuckDB all read it as a list of records.

Nothing here reads, writes, counts or collects; clickrec.publish does the I/O.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.ml.recommend import ITEMS_COL, SCORES_COL

ITEM_STRUCT = f"struct<{C.ITEM_ID}:string,{C.SCORE}:float,{C.RANK}:int>"
ITEMS_TYPE = f"array<{ITEM_STRUCT}>"


def exclusion_pairs(
    interactions_df: DataFrame,
    *,
    exclude: str,
    user_idx_col: str = C.USER_IDX,
    item_idx_col: str = C.ITEM_IDX,
    purchases_col: str = C.PURCHASES,
) -> DataFrame:
    """(user_idx, item_idx) pairs never to recommend: items bought (purchases > 0) or every item seen."""
    pairs = interactions_df
    if exclude == "bought":
        pairs = pairs.where(F.col(purchases_col) > 0)
    elif exclude != "seen":
        raise ValueError(f"exclude must be 'bought' or 'seen', not {exclude!r}")
    return pairs.select(
        F.col(user_idx_col).cast("int").alias(user_idx_col),
        F.col(item_idx_col).cast("int").alias(item_idx_col),
    ).distinct()


def _item_struct(item_id: Column, score: Column, rank: Column) -> Column:
    return F.struct(
        item_id.cast("string").alias(C.ITEM_ID),
        score.cast("float").alias(C.SCORE),
        rank.cast("int").alias(C.RANK),
    )


def rank_rows(
    recs_df: DataFrame,
    item_index_df: DataFrame,
    *,
    user_idx_col: str = C.USER_IDX,
    items_col: str = ITEMS_COL,
    scores_col: str = SCORES_COL,
    source_id_col: str = C.SOURCE_ID,
    idx_col: str = C.IDX,
    keep: tuple[str, ...] = (),
) -> DataFrame:
    """(user_idx, items, scores) top-k lists -> (user_idx, items array<struct<item_id, score, rank>>).

    Item int ids become the source's ids through the item index; the order and scores are
    kept, ranks start at 1. A user whose list is empty (everything excluded) keeps a row with
    an empty array. Columns named in `keep` (one value per user, e.g. `source`) are carried along.
    """
    exploded = recs_df.select(
        F.col(user_idx_col),
        *keep,
        F.posexplode_outer(F.arrays_zip(F.col(items_col).alias("i"), F.col(scores_col).alias("s"))).alias(
            "_pos", "_z"
        ),
    ).select(
        user_idx_col,
        *keep,
        "_pos",
        F.col("_z.i").alias("_item_idx"),
        F.col("_z.s").alias("_score"),
    )
    index = F.broadcast(
        item_index_df.select(F.col(idx_col).cast("int").alias("_item_idx"), F.col(source_id_col).alias("_item_id"))
    )
    mapped = exploded.join(index, "_item_idx", "left")
    # Sorting an array of structs compares fields in order: put the position first, then reshape.
    entry = F.when(
        F.col("_item_id").isNotNull(),
        F.struct(F.col("_pos"), F.col("_item_id"), F.col("_score")),
    )
    grouped = mapped.groupBy(user_idx_col, *keep).agg(F.array_sort(F.collect_list(entry)).alias("_sorted"))
    return grouped.select(
        user_idx_col,
        *keep,
        F.transform(
            F.col("_sorted"),
            lambda e, i: _item_struct(e["_item_id"], e["_score"], i + F.lit(1)),
        ).cast(ITEMS_TYPE).alias(C.ITEMS),
    )


def attach_user_ids(
    ranked_df: DataFrame,
    user_index_df: DataFrame,
    *,
    user_idx_col: str = C.USER_IDX,
    user_id_col: str = C.USER_ID,
    source_id_col: str = C.SOURCE_ID,
    idx_col: str = C.IDX,
) -> DataFrame:
    """Replace user_idx by the source's user id (users without an index entry are dropped)."""
    index = user_index_df.select(
        F.col(idx_col).cast("int").alias(user_idx_col), F.col(source_id_col).alias(user_id_col)
    )
    return ranked_df.join(index, user_idx_col, "inner").drop(user_idx_col)


def serving_rows(
    lists_df: DataFrame,
    *,
    variant: str,
    model_name: str,
    model_version: int,
    updated_at: datetime,
    source: str = C.SOURCE_BATCH,
) -> DataFrame:
    """(user_id, items[, source]) -> the gold/recommendations row shape, one row per (user, variant).

    Each row's `source` is its own when `lists_df` has that column (the confidence rule marks
    popular lists), else `source`.
    """
    source_col = F.coalesce(F.col(C.SOURCE), F.lit(source)) if C.SOURCE in lists_df.columns else F.lit(source)
    return lists_df.select(
        F.col(C.USER_ID).cast("string").alias(C.USER_ID),
        F.lit(variant).alias(C.VARIANT),
        F.col(C.ITEMS).cast(ITEMS_TYPE).alias(C.ITEMS),
        F.lit(model_name).alias(C.MODEL_NAME),
        F.lit(model_version).cast("int").alias(C.MODEL_VERSION),
        source_col.cast("string").alias(C.SOURCE),
        F.lit(updated_at).cast("timestamp").alias(C.UPDATED_AT),
    )


def popular_items(
    interactions_df: DataFrame,
    *,
    n: int,
    variant: str,
    model_name: str,
    model_version: int,
    updated_at: datetime,
    user_col: str = C.USER_ID,
    item_col: str = C.ITEM_ID,
) -> DataFrame:
    """One gold/popular_items row: the n items with the most distinct users, ties by item id.

    The score is the number of distinct users; the list is what an unknown user is served.
    """
    counts = (
        interactions_df.groupBy(item_col)
        .agg(F.countDistinct(user_col).alias("_users"))
        .orderBy(F.col("_users").desc(), F.col(item_col).cast("string").asc())
        .limit(n)
    )
    ranked = counts.withColumn(
        "_rank", F.row_number().over(Window.orderBy(F.col("_users").desc(), F.col(item_col).cast("string").asc()))
    )
    return ranked.agg(
        F.array_sort(F.collect_list(F.struct("_rank", F.col(item_col).alias("_item_id"), "_users"))).alias("_s")
    ).select(
        F.lit(variant).alias(C.VARIANT),
        F.transform(
            F.col("_s"), lambda e: _item_struct(e["_item_id"], e["_users"], e["_rank"])
        ).cast(ITEMS_TYPE).alias(C.ITEMS),
        F.lit(model_name).alias(C.MODEL_NAME),
        F.lit(model_version).cast("int").alias(C.MODEL_VERSION),
        F.lit(C.SOURCE_POPULAR).alias(C.SOURCE),
        F.lit(updated_at).cast("timestamp").alias(C.UPDATED_AT),
    )


def reference_top_k(
    als_model: object,
    excluded_df: DataFrame,
    *,
    k: int,
    max_excluded: int,
    user_col: str = C.USER_IDX,
    item_col: str = C.ITEM_IDX,
) -> DataFrame:
    """The reference, for tests and benchmarks only: `recommendForAllUsers` + filter.

    Asks ALS for k + max_excluded items per user (the most any user can lose to the filter),
    drops excluded pairs and keeps the best k, ties by item id. Same output shape as
    clickrec.ml.recommend.recommend_top_k. Its cost grows with max_excluded, which is why the
    job does not use it.
    """
    recs = als_model.recommendForAllUsers(k + max_excluded)  # type: ignore[attr-defined]
    flat = recs.select(user_col, F.explode("recommendations").alias("_r")).select(
        user_col,
        F.col(f"_r.{item_col}").cast("int").alias(item_col),
        F.col("_r.rating").cast("float").alias("_score"),
    )
    kept = flat.join(excluded_df.select(user_col, item_col), [user_col, item_col], "left_anti")
    order = Window.partitionBy(user_col).orderBy(F.col("_score").desc(), F.col(item_col).asc())
    top = kept.withColumn("_n", F.row_number().over(order)).where(F.col("_n") <= k)
    grouped = top.groupBy(user_col).agg(
        F.array_sort(F.collect_list(F.struct("_n", item_col, "_score"))).alias("_s")
    )
    return grouped.select(
        F.col(user_col).cast("int").alias(user_col),
        F.transform("_s", lambda e: e[item_col]).alias(ITEMS_COL),
        F.transform("_s", lambda e: e["_score"]).alias(SCORES_COL),
    )
