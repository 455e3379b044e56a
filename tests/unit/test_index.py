"""Stable int ids: existing ids kept, new ids dense, unique and deterministic."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from clickrec import columns as C
from clickrec.transforms.index import assign_new_ids, attach_ids, number_new_keys

INDEX = f"{C.SOURCE_ID} string, {C.IDX} int"

# Case, digits, accents, CJK, a key past the BMP (a surrogate pair in UTF-16, whose order there
# differs from code-point order) and the characters either side of the surrogates.
ALPHABET = "aAbBzZ09_ éü中😀\ue000\uffff"


def mixed_keys(seed: int) -> tuple[list[str | None], list[tuple[str, int]]]:
    """Seeded keys with duplicates and nulls, and an index holding ids 0..n-1 for some of them."""
    rng = random.Random(seed)
    keys: list[str | None] = ["".join(rng.choices(ALPHABET, k=rng.randrange(0, 4))) for _ in range(300)]
    keys += [None] * 5
    rng.shuffle(keys)
    known = [*rng.sample(sorted({k for k in keys if k is not None}), 25), "only-in-index"]
    rng.shuffle(known)
    return keys, [(k, i) for i, k in enumerate(known)]


def by_the_rule(keys: list[str | None], index: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The ids by definition: new non-null keys in code-point order, after the largest id."""
    known = {k for k, _ in index}
    fresh = sorted({k for k in keys if k is not None and k not in known})
    top = max((i for _, i in index), default=-1)
    return [(k, top + n) for n, k in enumerate(fresh, start=1)]


@contextmanager
def spread_over(spark: SparkSession, partitions: int) -> Iterator[None]:
    """Sorts over `partitions` partitions in the block (AQE would merge these small ones into one)."""
    conf = {"spark.sql.shuffle.partitions": str(partitions),
            "spark.sql.adaptive.coalescePartitions.enabled": "false"}
    before = {key: spark.conf.get(key) for key in conf}
    try:
        for key, value in conf.items():
            spark.conf.set(key, value)
        yield
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)


@contextmanager
def window_warnings(spark: SparkSession) -> Iterator[list[str]]:
    """The WARN lines Spark's window operator logs in the block (the session raises it to ERROR)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log4j = jvm.org.apache.logging.log4j
    name = "org.apache.spark.sql.execution.window"
    level = log4j.LogManager.getLogger(name).getLevel()
    writer = jvm.java.io.StringWriter()
    layout = log4j.core.layout.PatternLayout.newBuilder().withPattern("%m%n").build()
    appender = (log4j.core.appender.WriterAppender.newBuilder()
                .setName("test-window-warnings").setTarget(writer).setLayout(layout).build())
    appender.start()
    lines: list[str] = []
    log4j.core.config.Configurator.setLevel(name, log4j.Level.WARN)
    context = log4j.LogManager.getContext(False)
    logger = context.getConfiguration().getLoggerConfig(name)
    logger.addAppender(appender, log4j.Level.WARN, None)
    context.updateLoggers()
    try:
        yield lines
    finally:
        logger.removeAppender(appender.getName())
        log4j.core.config.Configurator.setLevel(name, level)
        appender.stop()
        lines += str(writer.toString()).splitlines()


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
    # and on seeded keys of every script that Spark sorts over several partitions
    keys, index = mixed_keys(5)
    with spread_over(spark, 4):
        spark_ids = assign_new_ids(spark.createDataFrame([(k,) for k in keys], "user_id string").repartition(4),
                                   spark.createDataFrame(index, INDEX), key_col="user_id").collect()
    got = number_new_keys(keys, [k for k, _ in index], max(i for _, i in index))
    assert got == sorted((r[C.SOURCE_ID], r[C.IDX]) for r in spark_ids) == by_the_rule(keys, index)


def test_ids_follow_the_rule_on_keys_spread_over_partitions(spark: SparkSession) -> None:
    # repartitioned keys with nulls, duplicates, known keys and mixed scripts; the same ids
    # whatever the number of partitions the sort spreads them over
    keys, index = mixed_keys(22)
    expected = by_the_rule(keys, index)
    assert len(expected) > 100 and expected[0][1] == len(index)
    keys_df = spark.createDataFrame([(k,) for k in keys], "user_id string").repartition(4)
    index_df = spark.createDataFrame(index, INDEX).repartition(3)
    for partitions in (1, 4, 7):
        with spread_over(spark, partitions):
            if partitions > 1:  # the setting does spread the sort
                parts = keys_df.orderBy("user_id").select(F.spark_partition_id().alias("p")).distinct()
                assert parts.count() > 1
            got = assign_new_ids(keys_df, index_df, key_col="user_id")
            assert sorted((r[C.SOURCE_ID], r[C.IDX]) for r in got.collect()) == expected
            # read again (an ingest counts the rows, then MERGEs them): the same ids
            assert sorted((r[C.SOURCE_ID], r[C.IDX]) for r in got.collect()) == expected


def test_numbering_moves_no_keys_into_one_partition(spark: SparkSession) -> None:
    # Spark logs this warning when it plans a window without a partition (all rows in one task)
    keys, index = mixed_keys(3)
    with spread_over(spark, 4), window_warnings(spark) as warnings:
        got = assign_new_ids(spark.createDataFrame([(k,) for k in keys], "user_id string"),
                             spark.createDataFrame(index, INDEX), key_col="user_id").collect()
    assert len(got) == len(by_the_rule(keys, index))
    assert not [w for w in warnings if "No Partition Defined" in w]
