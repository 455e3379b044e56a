"""The evaluator against numbers computed by hand, and the top-k scorer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import SparkSession

from clickrec.ml.evaluate import catalogue_coverage, evaluate_ranking, ranking_frame
from clickrec.ml.recommend import recommend_top_k, top_k_scores


def test_metrics_on_a_case_computed_by_hand(spark: SparkSession) -> None:
    # user 1: recs [10, 20, 30], relevant {10, 30}; user 2: recs [40, 50, 60], relevant {60, 70}
    # user 3 has test items but no recommendations: it counts as zeros.
    recs = spark.createDataFrame([(1, [10, 20, 30]), (2, [40, 50, 60])], "user_idx INT, items ARRAY<INT>")
    test = spark.createDataFrame(
        [(1, 10), (1, 30), (2, 60), (2, 70), (3, 99)], "user_idx INT, item_idx INT"
    )
    m = evaluate_ranking(ranking_frame(recs, test), k=3)
    # precision@3: (2/3 + 1/3 + 0) / 3
    assert m["precision_at_3"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    # recall@3: (2/2 + 1/2 + 0/1) / 3
    assert m["recall_at_3"] == pytest.approx((1 + 0.5 + 0) / 3)
    # ndcg@3 (binary gains, log2(i+2) discounts): u1 (1 + 1/2) / (1 + 1/log2 3); u2 (1/2) / (1 + 1/log2 3)
    idcg2 = 1 + 1 / math.log2(3)
    assert m["ndcg_at_3"] == pytest.approx(((1 + 0.5) / idcg2 + 0.5 / idcg2 + 0) / 3)
    # map@3: u1 (1/1 + 2/3) / min(2, 3); u2 (1/3) / 2
    assert m["map_at_3"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 3) / 2 + 0) / 3)
    assert catalogue_coverage(recs, 12) == pytest.approx(6 / 12)


def test_top_k_scores_excludes_seen_and_breaks_ties_by_id() -> None:
    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    item_ids = np.array([5, 6, 7, 8], dtype=np.int64)
    items = np.array([[3, 0], [2, 1], [2, 5], [1, 1]], dtype=np.float32)
    ids, scores = top_k_scores(users, item_ids, items, [np.array([5]), None], k=2)
    assert ids[0].tolist() == [6, 7]  # item 5 is seen; 6 and 7 tie at 2, lower id first
    assert scores[0].tolist() == [2.0, 2.0]
    assert ids[1].tolist() == [7, 6]  # 6 and 8 tie at 1 -> 6 first
    ids, _ = top_k_scores(users[:1], item_ids, items, [np.array([5, 6, 7, 8])], k=3)
    assert ids[0].tolist() == []  # everything seen: an empty list, not seen items


def test_top_k_scores_ties_across_the_cut_go_by_id_whatever_the_row_order() -> None:
    # Many items tie at the k-th score (the popularity baseline's integer counts do): the k
    # kept are the lowest ids, not whichever the partition happened to pick.
    rng = np.random.default_rng(11)
    for case in range(200):
        n_items, k = int(rng.integers(1, 60)), int(rng.integers(1, 12))
        item_ids = rng.permutation(n_items * 3)[:n_items].astype(np.int64)
        items = rng.integers(0, 3, size=(n_items, 1)).astype(np.float32)  # few distinct scores
        seen = rng.choice(item_ids, size=int(rng.integers(0, n_items)), replace=False)
        ids, scores = top_k_scores(np.ones((1, 1), np.float32), item_ids, items, [seen], k=k)
        keep = ~np.isin(item_ids, seen)
        full = np.lexsort((item_ids[keep], -items[keep, 0]))[:k]
        assert ids[0].tolist() == item_ids[keep][full].tolist(), case
        assert scores[0].tolist() == items[keep, 0][full].tolist(), case


def test_top_k_scores_skips_nan_scores_instead_of_dropping_the_list() -> None:
    item_ids = np.arange(6, dtype=np.int64)
    items = np.array([[2], [3], [np.nan], [np.nan], [np.nan], [np.nan]], dtype=np.float32)
    ids, scores = top_k_scores(np.ones((1, 1), np.float32), item_ids, items, [None], k=3)
    assert ids[0].tolist() == [1, 0] and scores[0].tolist() == [3.0, 2.0]


def test_recommend_top_k_in_spark_matches_numpy(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    u, it = rng.normal(size=(20, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    uf = spark.createDataFrame([(i, u[i].tolist()) for i in range(20)], "id INT, features ARRAY<FLOAT>")
    itf = spark.createDataFrame([(j, it[j].tolist()) for j in range(30)], "id INT, features ARRAY<FLOAT>")
    seen = spark.createDataFrame([(i, (i * 7) % 30) for i in range(20)], "user_idx INT, item_idx INT")
    got = {r.user_idx: r["items"] for r in recommend_top_k(uf, itf, seen, k=5).collect()}
    for i in range(20):
        s = u[i] @ it.T
        s[(i * 7) % 30] = -np.inf
        assert got[i] == np.argsort(-s, kind="stable")[:5].tolist()


def test_top_k_scores_of_a_row_do_not_depend_on_its_block() -> None:
    # A rerun whose partitioning differs must give the same lists and scores bit for bit, or
    # every row is rewritten: a one-row block (a partition of 1025 users) must not take a
    # different BLAS path (gemv sums in another order than gemm).
    rng = np.random.default_rng(5)
    users = rng.normal(size=(1025, 64)).astype(np.float32)  # a full block plus one
    items = rng.normal(size=(2000, 64)).astype(np.float32)
    item_ids = np.arange(2000, dtype=np.int64)
    _, block_scores = top_k_scores(users, item_ids, items, [None] * 1025, k=50)
    _, small_scores = top_k_scores(users[:6], item_ids, items, [None] * 6, k=50)
    for row in (0, 1, 5, 511, 1023, 1024):
        _, alone = top_k_scores(users[row : row + 1], item_ids, items, [None], k=50)
        assert alone[0].tobytes() == block_scores[row].tobytes(), row
        if row < 6:
            assert small_scores[row].tobytes() == block_scores[row].tobytes(), row
