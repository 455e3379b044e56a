from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec.ml.split import assign_folds, split_stratified_random, split_temporal


def _ratings(spark: SparkSession) -> DataFrame:
    # user u has 4*u interactions (u = 1..5), with increasing timestamps per item
    base = dt.datetime(2024, 1, 1)
    rows = [(u, i, 1.0, base + dt.timedelta(hours=i)) for u in range(1, 6) for i in range(4 * u)]
    return spark.createDataFrame(rows, "user_idx INT, item_idx INT, rating FLOAT, last_seen TIMESTAMP")


def _pairs(df: DataFrame) -> set[tuple[int, int]]:
    return {(r.user_idx, r.item_idx) for r in df.select("user_idx", "item_idx").collect()}


def test_stratified_split_no_leakage_and_per_user_fraction(spark: SparkSession) -> None:
    df = _ratings(spark)
    train, test = split_stratified_random(df, test_fraction=0.25, seed=7)
    tr, te = _pairs(train), _pairs(test)
    assert not tr & te
    assert tr | te == _pairs(df)
    counts = {r.user_idx: r["count"] for r in test.groupBy("user_idx").count().collect()}
    assert counts == {u: u for u in range(1, 6)}  # exactly 25% of 4u rows per user


def test_stratified_split_is_deterministic_and_seeded(spark: SparkSession) -> None:
    df = _ratings(spark)
    a = _pairs(split_stratified_random(df, test_fraction=0.25, seed=7)[1])
    b = _pairs(split_stratified_random(df.repartition(3), test_fraction=0.25, seed=7)[1])
    c = _pairs(split_stratified_random(df, test_fraction=0.25, seed=8)[1])
    assert a == b
    assert a != c


def test_single_interaction_user_stays_in_train(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, 1, 1.0)], "user_idx INT, item_idx INT, rating FLOAT")
    train, test = split_stratified_random(df, test_fraction=0.5, seed=1)
    assert train.count() == 1 and test.count() == 0


def test_temporal_split_takes_each_users_latest(spark: SparkSession) -> None:
    df = _ratings(spark)
    train, test = split_temporal(df, test_fraction=0.25)
    last_train = {r.user_idx: r.m for r in train.groupBy("user_idx").agg(F.max("last_seen").alias("m")).collect()}
    first_test = {r.user_idx: r.m for r in test.groupBy("user_idx").agg(F.min("last_seen").alias("m")).collect()}
    assert all(last_train[u] < first_test[u] for u in first_test)
    assert not _pairs(train) & _pairs(test)
    assert sorted(first_test) == [1, 2, 3, 4, 5]


def test_folds_deal_each_user_over_all_folds(spark: SparkSession) -> None:
    df = _ratings(spark)
    folded = assign_folds(df, num_folds=3, seed=1)
    per_user = {
        r.user_idx: sorted(r.folds)
        for r in folded.groupBy("user_idx").agg(F.collect_list("fold").alias("folds")).collect()
    }
    for user, folds in per_user.items():
        sizes = [folds.count(f) for f in range(3)]
        assert max(sizes) - min(sizes) <= 1, (user, sizes)


def test_stratified_split_sizes_follow_microsoft_recommenders_rule(spark: SparkSession) -> None:
    # python_stratified_split puts a user's row of rank (cumcount + 1) / count <= 1 - f in
    # train, i.e. floor(n * (1 - f)) rows; ours keeps at least one row in train on top.
    # Expected sizes are exact (decimal fractions), so float rounding of 1 - f cannot hide:
    # 0.8, 0.55 and 0.9 are fractions where (k + 1) / n <= 1 - f in floats drops a row.
    sizes, fractions = range(1, 41), (0.1, 0.2, 0.25, 0.3, 0.55, 0.8, 0.9)
    rows = [(f_i * 100 + n, i, 1.0) for f_i in range(len(fractions)) for n in sizes for i in range(n)]
    df = spark.createDataFrame(rows, "user_idx INT, item_idx INT, rating FLOAT")
    for f_i, f in enumerate(fractions):
        users = df.filter((F.col("user_idx") / 100).cast("int") == f_i)
        train, _ = split_stratified_random(users, test_fraction=f, seed=3)
        got = {r.user_idx % 100: r["count"] for r in train.groupBy("user_idx").count().collect()}
        expected = {n: max(1, math.floor(n * (1 - Fraction(repr(f))))) for n in sizes}
        assert got == expected, (f, {n: (got[n], expected[n]) for n in sizes if got[n] != expected[n]})
