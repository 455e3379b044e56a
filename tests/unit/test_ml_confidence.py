"""The confidence rule: users with too few training interactions are served the popular list."""

from __future__ import annotations

from chispa import assert_df_equality
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.ml.confidence import confident_lists, interaction_counts, is_confident, popular_list

LISTS = f"{C.USER_IDX} int, items array<int>, scores array<float>"
SERVED = f"{LISTS}, {C.SOURCE} string"


def test_users_below_the_minimum_get_their_popular_list(spark: SparkSession) -> None:
    model = spark.createDataFrame(
        [(1, [7, 8], [1e-6, 9e-7]), (2, [5, 6], [0.9, 0.5]), (3, [4, 3], [0.4, 0.1]), (4, [9], [2e-6])], LISTS)
    # popular lists with each user's own exclusions applied; user 4 has none (nothing left)
    popular = spark.createDataFrame([(1, [3, 4], [40.0, 30.0]), (2, [3, 4], [40.0, 30.0]), (3, [5, 4], [20.0, 30.0])],
                                    LISTS)
    train = spark.createDataFrame([(1, 3), (2, 1), (2, 2), (2, 3), (3, 1), (3, 2), (4, 1)],
                                  f"{C.USER_IDX} int, {C.ITEM_IDX} int")
    served = confident_lists(model, popular, interaction_counts(train), min_interactions=2)
    expected = spark.createDataFrame([
        (1, [3, 4], [40.0, 30.0], C.SOURCE_POPULAR),  # 1 interaction: popular
        (2, [5, 6], [0.9, 0.5], C.SOURCE_BATCH),      # 3: the model's
        (3, [4, 3], [0.4, 0.1], C.SOURCE_BATCH),      # 2: at the minimum, the model's
        (4, [9], [2e-6], C.SOURCE_BATCH),             # below, but no popular list to give: the model's
    ], SERVED)
    assert_df_equality(served, expected, ignore_row_order=True, ignore_nullable=True)
    # 0 and 1 turn the rule off: every user keeps the model's list
    for off in (0, 1):
        kept = confident_lists(model, popular, interaction_counts(train), min_interactions=off)
        assert_df_equality(kept.drop(C.SOURCE), model, ignore_row_order=True, ignore_nullable=True)
    # a user without a count (no training row) counts as 0
    alone = confident_lists(model, popular, interaction_counts(train.where("user_idx = 2")), min_interactions=1)
    assert {r[C.USER_IDX]: r[C.SOURCE] for r in alone.collect()} == {
        1: C.SOURCE_POPULAR, 2: C.SOURCE_BATCH, 3: C.SOURCE_POPULAR, 4: C.SOURCE_BATCH}


def test_the_python_twin_follows_the_same_rule() -> None:
    assert not is_confident(1, 2) and is_confident(2, 2) and is_confident(1, 0)
    ranked = [("a", 9.0), ("b", 8.0), ("c", 7.0), ("d", 6.0)]
    assert popular_list(ranked, {"b"}, 2) == [("a", 9.0), ("c", 7.0)]
    assert popular_list(ranked, ["a", "b", "c", "d"], 3) == []
