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
    # 1 (and 0) turn the rule off: every user keeps the model's list
    kept = confident_lists(model, popular, interaction_counts(train), min_interactions=1)
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


def test_the_stream_fold_in_applies_the_rule_with_the_published_popular_list() -> None:
    import numpy as np
    import pandas as pd

    from clickrec.ml.foldin import ItemFactors
    from clickrec.ml.foldin_model import FoldInModel, fold_in_lists

    items = ItemFactors(np.arange(4, dtype=np.int64), np.eye(4, 2, dtype=np.float32) + 0.1)
    popular = (("i3", 30.0), ("i2", 20.0), ("i1", 10.0))
    model = FoldInModel("m", 1, items, {i: f"i{i}" for i in range(4)}, reg_param=0.1, alpha=1.0, popular=popular)
    silver = pd.DataFrame({  # "a": one interaction; "b": two, one of them on an item the model does not know
        C.USER_ID: ["a", "b", "b", "c", "c"], C.ITEM_ID: ["i3", "i0", "i9", "i0", "i1"],
        C.ITEM_IDX: [3, 0, 9, 0, 1], C.RATING: [1.0] * 5, C.PURCHASES: [1, 0, 0, 0, 0]})
    lists = fold_in_lists(model, silver, n=2, exclude="bought", min_interactions=2)
    assert lists["a"] == ([("i2", 20.0), ("i1", 10.0)], C.SOURCE_POPULAR)  # i3 bought
    assert lists["b"] == ([("i3", 30.0), ("i2", 20.0)], C.SOURCE_POPULAR)  # one known item
    assert lists["c"][1] == C.SOURCE_STREAM and len(lists["c"][0]) == 2
    # off, or no popular list published for the model: every user keeps the fold-in's list
    for off in (fold_in_lists(model, silver, n=2, exclude="bought", min_interactions=0),
                fold_in_lists(FoldInModel("m", 1, items, model.item_ids, 0.1, 1.0), silver, n=2, exclude="bought",
                              min_interactions=2)):
        assert {u: source for u, (_, source) in off.items()} == {"a": C.SOURCE_STREAM, "b": C.SOURCE_STREAM,
                                                                 "c": C.SOURCE_STREAM}
