"""Small silver tables with planted tastes, for training, publish and serving tests (no ingest needed)."""

from __future__ import annotations

import datetime as dt

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io.lake import Lake


def write_planted_silver(
    spark: SparkSession, config: ClickrecConfig, *, users: int = 300, items: int = 120,
    groups: int = 4, per_user: int = 14, seed: int = 0,
) -> None:
    """Each user likes one item group; a few globally popular items add noise.

    A model that learns the groups beats a popularity list, which can only recommend the same
    popular items to everyone.
    """
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(items) % groups
    popular = np.arange(8)
    base = dt.datetime(2024, 1, 1)
    rows = []
    for u in range(users):
        g = u % groups
        own = np.flatnonzero(group_of_item == g)
        weights = np.linspace(2.0, 1.0, own.size)
        picks = set(rng.choice(own, size=per_user - 2, replace=False, p=weights / weights.sum()).tolist())
        picks |= set(rng.choice(popular, size=2, replace=False).tolist())
        for n, i in enumerate(sorted(picks)):
            rows.append((f"u{u}", f"i{i}", u, int(i), float(rng.integers(1, 4)), base + dt.timedelta(hours=u + n)))
    inter = spark.createDataFrame(
        rows,
        f"{C.USER_ID} STRING, {C.ITEM_ID} STRING, {C.USER_IDX} INT, {C.ITEM_IDX} INT, "
        f"{C.RATING} DOUBLE, {C.LAST_SEEN} TIMESTAMP",
    )
    inter.write.format("delta").mode("overwrite").save(Lake.from_config(config).path(C.SILVER_INTERACTIONS))
    spark.createDataFrame([(f"u{u}", u) for u in range(users)], f"{C.SOURCE_ID} STRING, {C.IDX} INT") \
        .write.format("delta").mode("overwrite").save(Lake.from_config(config).path(C.SILVER_USER_INDEX))
    spark.createDataFrame([(f"i{i}", i) for i in range(items)], f"{C.SOURCE_ID} STRING, {C.IDX} INT") \
        .write.format("delta").mode("overwrite").save(Lake.from_config(config).path(C.SILVER_ITEM_INDEX))


def write_planted_lake(spark: SparkSession, config: ClickrecConfig, *, users: int = 150, items: int = 60) -> None:
    """write_planted_silver plus a purchases column (rating 3 = bought), as ingest has it."""
    write_planted_silver(spark, config, users=users, items=items)
    path = Lake.from_config(config).path(C.SILVER_INTERACTIONS)
    bought = spark.read.format("delta").load(path).withColumn(
        C.PURCHASES, (F.col(C.RATING) >= 3).cast("long")
    )
    bought.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def write_silver_rows(spark: SparkSession, config: ClickrecConfig, rows: list[tuple[int, int, float]]) -> None:
    """Silver (interactions and both indexes) holding exactly `rows` of (user_idx, item_idx, rating).

    Source ids are u<idx> and i<idx>; each row is an hour after the previous one.
    """
    lake, base = Lake.from_config(config), dt.datetime(2024, 1, 1)
    inter = spark.createDataFrame(
        [(f"u{u}", f"i{i}", u, i, r, base + dt.timedelta(hours=n)) for n, (u, i, r) in enumerate(rows)],
        f"{C.USER_ID} STRING, {C.ITEM_ID} STRING, {C.USER_IDX} INT, {C.ITEM_IDX} INT, "
        f"{C.RATING} DOUBLE, {C.LAST_SEEN} TIMESTAMP",
    )
    inter.write.format("delta").mode("overwrite").save(lake.path(C.SILVER_INTERACTIONS))
    for table, prefix, ids in ((C.SILVER_USER_INDEX, "u", {u for u, _, _ in rows}),
                               (C.SILVER_ITEM_INDEX, "i", {i for _, i, _ in rows})):
        spark.createDataFrame([(f"{prefix}{x}", x) for x in sorted(ids)], f"{C.SOURCE_ID} STRING, {C.IDX} INT") \
            .write.format("delta").mode("overwrite").save(lake.path(table))


def popular_taste_rows(*, users: int = 150, items: int = 60, per_user: int = 10, seed: int = 0) -> list[tuple[int, int, float]]:
    """Every user draws items from one Zipf-like popularity: no taste of their own to learn.

    The popular list is the best guess for everyone there, so a poorly fitted model loses to it.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, items + 1)
    rows = []
    for u in range(users):
        for i in sorted(rng.choice(items, size=per_user, replace=False, p=weights / weights.sum()).tolist()):
            rows.append((u, int(i), 1.0))
    return rows
