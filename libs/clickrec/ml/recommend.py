"""Top-k recommendation that excludes seen items, by a blocked multiply in mapInPandas.

Spark's `recommendForAllUsers` cannot exclude what a user already has, and asking it for more
than k to filter afterwards does not bound the work. Here each partition of user factors is
scored against the broadcast item-factor matrix in blocks, seen items are masked, and
`argpartition` keeps the top k: memory per task is (block x items), time is one GEMM per block.
The same function serves the popularity baseline (rank-1 factors: user [1], item [count]).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clickrec import columns as C

ITEMS_COL = "items"
SCORES_COL = "scores"
BLOCK_ROWS = 1024


def item_matrix(item_factors_df: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Collect item factors (id, features) into (ids int64[n], matrix float32[n, rank])."""
    pdf: pd.DataFrame = item_factors_df.select("id", "features").toPandas()
    if pdf.empty:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    ids = pdf["id"].to_numpy(dtype=np.int64)
    mat = np.vstack([np.asarray(f, dtype=np.float32) for f in pdf["features"]])
    return ids, mat


def top_k_scores(
    user_mat: np.ndarray,
    item_ids: np.ndarray,
    item_mat: np.ndarray,
    seen: list[np.ndarray | None],
    k: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For each user row: the k best item ids by score, seen ids excluded, descending.

    Ties are broken by item id ascending so results are deterministic.
    """
    if item_mat.shape[0] == 0 or user_mat.shape[0] == 0:
        return [np.zeros(0, np.int64)] * user_mat.shape[0], [np.zeros(0, np.float32)] * user_mat.shape[0]
    if user_mat.shape[0] == 1:
        # numpy sends a one-row product to gemv, which sums in another order than gemm: the
        # row's scores would then depend on its block's size, i.e. on the partitioning, and a
        # rerun would rewrite unchanged lists. Two rows go through gemm like every block.
        scores = (np.vstack([user_mat, user_mat]) @ item_mat.T)[:1]
    else:
        scores = user_mat @ item_mat.T  # (users, items)
    pos = {int(i): j for j, i in enumerate(item_ids)} if any(s is not None and len(s) for s in seen) else {}
    for row, seen_ids in enumerate(seen):
        if seen_ids is None or len(seen_ids) == 0:
            continue
        cols = [pos[int(s)] for s in seen_ids if int(s) in pos]
        scores[row, cols] = -np.inf
    n_items = scores.shape[1]
    kk = min(k, n_items)
    out_ids: list[np.ndarray] = []
    out_scores: list[np.ndarray] = []
    # The k-th best score of each row; every item scoring at least that is a candidate, so that
    # ties across the cut are decided by item id (argpartition alone picks an arbitrary subset
    # of them, which then depends on the row order of the factors).
    # Masked and NaN scores are -inf here, so that the k-th best is a real score when there is one.
    ranked = np.where(np.isfinite(scores), scores, -np.inf)
    if kk < n_items:
        kth = -np.partition(-ranked, kk - 1, axis=1)[:, kk - 1]
    else:
        kth = np.full(scores.shape[0], -np.inf)
    for row in range(scores.shape[0]):
        s_row = scores[row]
        cand = np.flatnonzero(np.isfinite(s_row) & (s_row >= kth[row]))
        s = s_row[cand]
        order = np.lexsort((item_ids[cand], -s))[:kk]
        out_ids.append(item_ids[cand[order]].astype(np.int64))
        out_scores.append(s[order].astype(np.float32))
    return out_ids, out_scores


def recommend_top_k(
    user_factors_df: DataFrame,
    item_factors_df: DataFrame,
    seen_df: DataFrame | None,
    *,
    k: int,
    user_col: str = C.USER_IDX,
    item_col: str = C.ITEM_IDX,
) -> DataFrame:
    """Top-k per user as (user_col, items array<int>, scores array<float>), seen items excluded.

    `user_factors_df` and `item_factors_df` have ALS's (id, features) shape; `seen_df` has
    (user_col, item_col) rows of what each user already has. Item factors are collected to
    the driver and shipped to the tasks: fine up to a few million items x rank 64.
    """
    spark = user_factors_df.sparkSession
    ids, mat = item_matrix(item_factors_df)
    bc = spark.sparkContext.broadcast((ids, mat))
    users = user_factors_df.select(F.col("id").alias(user_col), F.col("features"))
    if seen_df is not None:
        seen_lists = seen_df.groupBy(user_col).agg(F.collect_list(F.col(item_col).cast("long")).alias("_seen"))
        users = users.join(seen_lists, user_col, "left")
    else:
        users = users.withColumn("_seen", F.lit(None).cast("array<long>"))

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        item_ids, item_mat = bc.value
        for pdf in batches:
            for start in range(0, len(pdf), BLOCK_ROWS):
                block = pdf.iloc[start : start + BLOCK_ROWS]
                umat = np.vstack([np.asarray(f, dtype=np.float32) for f in block["features"]])
                seen = [None if s is None else np.asarray(s, dtype=np.int64) for s in block["_seen"]]
                top_ids, top_scores = top_k_scores(umat, item_ids, item_mat, seen, k)
                yield pd.DataFrame(
                    {
                        user_col: block[user_col].to_numpy(),
                        ITEMS_COL: [a.astype(np.int32).tolist() for a in top_ids],
                        SCORES_COL: [a.tolist() for a in top_scores],
                    }
                )

    schema = f"{user_col} int, {ITEMS_COL} array<int>, {SCORES_COL} array<float>"
    return users.mapInPandas(score, schema)


def popularity_factors(
    train_df: DataFrame, *, user_col: str = C.USER_IDX, item_col: str = C.ITEM_IDX
) -> tuple[DataFrame, DataFrame]:
    """Rank-1 (user, item) factors whose dot product is an item's number of distinct users.

    Feeding them to `recommend_top_k` gives the popularity baseline with the same exclusion
    rule and tie-breaking as the model.
    """
    users = train_df.select(F.col(user_col).alias("id")).distinct().withColumn(
        "features", F.array(F.lit(1.0).cast("float"))
    )
    items = (
        train_df.groupBy(item_col)
        .agg(F.countDistinct(user_col).alias("_n"))
        .select(F.col(item_col).alias("id"), F.array(F.col("_n").cast("float")).alias("features"))
    )
    return users, items
