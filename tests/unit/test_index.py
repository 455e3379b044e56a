"""Stable int ids: existing ids kept, new ids dense, unique and deterministic."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from clickrec import columns as C
from clickrec.transforms.index import assign_new_ids, attach_ids, number_new_keys

INDEX = f"{C.SOURCE_ID} string, {C.IDX} int"


def test_first_ids_start_at_zero_in_source_order(spark: SparkSession) -> None:
    keys = spark.createDataFrame([("b",), ("a",), ("b",), (None,), ("c",)], "user_id string")
    empty = spark.createDataFrame([], INDEX)
    got = assign_new_ids(keys, empty, key_col="user_id")
    assertDataFrameEqual(got, spark.createDataFrame([("a", 0), ("b", 1), ("c", 2)], INDEX))


def test_existing_ids_kept_new_ids_dense_after_the_max(spark: SparkSession) -> None:
    index = spark.createDataFrame([("x", 0), ("a", 1), ("m", 2)], INDEX)
    keys = spark.createDataFrame([("a",), ("zz",), ("m",), ("b",), ("zz",)], "user_id string")
    new = assign_new_ids(keys, index, key_col="user_id")
    assertDataFrameEqual(new, spark.createDataFrame([("b", 3), ("zz", 4)], INDEX))
    merged = index.unionByName(new).collect()
    ids = sorted(r[C.IDX] for r in merged)
    assert ids == list(range(len(merged)))  # dense and unique
    assert {r[C.SOURCE_ID] for r in merged} == {"x", "a", "m", "b", "zz"}


def test_nothing_new_gives_an_empty_frame(spark: SparkSession) -> None:
    index = spark.createDataFrame([("a", 0)], INDEX)
    keys = spark.createDataFrame([("a",)], "item_id string")
    assert assign_new_ids(keys, index, key_col="item_id").count() == 0


def test_attach_ids(spark: SparkSession) -> None:
    inter = spark.createDataFrame([("u1", "i9", 1.0)], f"{C.USER_ID} string, {C.ITEM_ID} string, {C.RATING} double")
    users = spark.createDataFrame([("u1", 5)], INDEX)
    items = spark.createDataFrame([("i9", 7)], INDEX)
    row = attach_ids(inter, users, items).first()
    assert (row[C.USER_IDX], row[C.ITEM_IDX], row[C.RATING]) == (5, 7, 1.0)


def test_in_memory_numbering_follows_the_spark_rule(spark: SparkSession) -> None:
    # the stream numbers its micro-batch keys in memory: same ids as assign_new_ids, including
    # non-ASCII keys, whose order must be Spark's binary UTF-8 order
    known = [("x", 0), ("a", 1), ("m", 2)]
    keys = ["a", "zz", "é", "m", "b", None, "zz", "Z", "ü"]
    expected = assign_new_ids(spark.createDataFrame([(k,) for k in keys], "user_id string"),
                              spark.createDataFrame(known, INDEX), key_col="user_id").collect()
    got = number_new_keys(keys, [k for k, _ in known], max(i for _, i in known))
    assert got == sorted((r[C.SOURCE_ID], r[C.IDX]) for r in expected)
    assert [i for _, i in got] == [3, 4, 5, 6, 7]
    assert number_new_keys(["b", "a"], [], None) == [("a", 0), ("b", 1)]
    assert number_new_keys(["a"], ["a"], 0) == []
