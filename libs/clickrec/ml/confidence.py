"""The confidence rule: a user the model knows too little about is served the popular list.

A user whose factor was fitted on fewer than `min_interactions` interactions (the training part
in evaluation, the model's training rows in publish, the user's silver rows in the stream's
fold-in) gets the popular list instead of the model's, with the same exclusions. With one or
two interactions an implicit ALS factor is mostly regularisation, its scores are near zero and
its list is close to random; the popular list is the better guess.

`min_interactions` 0 or 1 turns the rule off (every user has at least one interaction).
Pure: `is_confident` is the rule itself, `confident_lists` applies it to Spark top-k lists
(evaluation and publish) and `popular_list` builds a fallback list in Python (the stream).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.ml.recommend import ITEMS_COL, SCORES_COL

COUNT_COL = "interactions"
SOURCE_COL = C.SOURCE


def is_confident(interactions: int, min_interactions: int) -> bool:
    """True when a user with `interactions` training interactions is served the model's list."""
    return interactions >= min_interactions


def confident_lists(
    model_recs: DataFrame,
    popular_recs: DataFrame,
    counts: DataFrame,
    *,
    min_interactions: int,
    user_col: str = C.USER_IDX,
    count_col: str = COUNT_COL,
    model_source: str = C.SOURCE_BATCH,
) -> DataFrame:
    """The served top-k lists: (user, items, scores, source), one row per user of `model_recs`.

    `model_recs` and `popular_recs` are (user, items, scores) top-k lists with the user's
    exclusions applied (clickrec.ml.recommend.recommend_top_k with the model's factors and with
    popularity_factors); `counts` is (user, `count_col`): each user's training interactions.
    A user with fewer than `min_interactions` (no row in `counts` counts as 0) gets their
    popular list and source `popular` when `popular_recs` has one; every other user keeps the
    model's list and `model_source`. Users absent from `model_recs` are not added.
    """
    popular = popular_recs.select(
        F.col(user_col), F.col(ITEMS_COL).alias("_p_items"), F.col(SCORES_COL).alias("_p_scores")
    )
    joined = (
        model_recs.select(user_col, ITEMS_COL, SCORES_COL)
        .join(counts.select(user_col, count_col), user_col, "left")
        .join(popular, user_col, "left")
    )
    fallback = (F.coalesce(F.col(count_col), F.lit(0)) < F.lit(min_interactions)) & F.col("_p_items").isNotNull()
    return joined.select(
        F.col(user_col),
        F.when(fallback, F.col("_p_items")).otherwise(F.col(ITEMS_COL)).alias(ITEMS_COL),
        F.when(fallback, F.col("_p_scores")).otherwise(F.col(SCORES_COL)).alias(SCORES_COL),
        F.when(fallback, F.lit(C.SOURCE_POPULAR)).otherwise(F.lit(model_source)).alias(SOURCE_COL),
    )


def interaction_counts(train_df: DataFrame, *, user_col: str = C.USER_IDX, count_col: str = COUNT_COL) -> DataFrame:
    """(user, `count_col`): each user's number of rows in `train_df` (one row per interaction)."""
    return train_df.groupBy(user_col).agg(F.count(F.lit(1)).cast("int").alias(count_col))


def popular_list(
    popular: Sequence[tuple[str, float]], excluded: Iterable[str], n: int
) -> list[tuple[str, float]]:
    """The first `n` (item, score) pairs of the ranked `popular` list whose item is not excluded."""
    drop = set(excluded)
    return [(item, score) for item, score in popular if item not in drop][:n]
