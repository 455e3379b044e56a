"""Helpers for the publish and serving tests: a planted lake with purchases, a quickly registered
model, and the comparison of two top-k outputs up to score ties."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec import tracking
from clickrec.config import ClickrecConfig
from clickrec.io.delta import table_version
from clickrec.io.lake import Lake
from tests.train_data import write_planted_silver

TIE = 1e-4  # float32 GEMM in numpy vs the JVM's dot products: equal scores within this are ties


def write_planted_lake(spark: SparkSession, config: ClickrecConfig, *, users: int = 150, items: int = 60) -> None:
    """tests.train_data's planted silver plus a purchases column (rating 3 = bought), as ingest has it."""
    write_planted_silver(spark, config, users=users, items=items)
    path = Lake.from_config(config).path(C.SILVER_INTERACTIONS)
    bought = spark.read.format("delta").load(path).withColumn(
        C.PURCHASES, (F.col(C.RATING) >= 3).cast("long")
    )
    bought.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(path)


def register_als(spark: SparkSession, config: ClickrecConfig, *, rank: int, alias: str | None,
                 max_iter: int = 5) -> int:
    """Fit plain ALS on all of silver and register it the way train does (run, input versions).

    Quicker than clickrec.train.run_train (no split, tuning or evaluation) for tests that need a
    second model version or a model outside the training tests.
    """
    tables = {}
    for t in (C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX):
        path = Lake.from_config(config).path(t)
        tables[t] = (path, int(table_version(spark, path) or 0))
    ratings = spark.read.format("delta").load(tables[C.SILVER_INTERACTIONS][0]).select(
        C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("float").alias(C.RATING)
    )
    model = ALS(rank=rank, maxIter=max_iter, regParam=0.05, alpha=10.0, implicitPrefs=True, seed=7,
                userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.RATING,
                numUserBlocks=2, numItemBlocks=2).fit(ratings)
    with tracking.start_parent_run(config, f"test-als-rank{rank}", {"clickrec.job": "test"}) as run:
        tracking.log_input_tables(tables)
        version = tracking.log_spark_model(
            model, config, metadata={**{f"input.{t}.version": v for t, (_, v) in tables.items()},
                                     "run_id": run.info.run_id},
        )
    if alias is not None:
        tracking.set_alias(config, alias, version)
    return version


def lists_by_user(df: DataFrame, *, user_col: str = C.USER_IDX) -> dict[Any, tuple[list[Any], list[float]]]:
    """recommend_top_k-shaped output -> {user: (items, scores)}."""
    return {r[user_col]: (list(r["items"]), [float(s) for s in r["scores"]]) for r in df.collect()}


def assert_same_up_to_ties(
    fast: dict[Any, tuple[list[Any], list[float]]],
    reference: dict[Any, tuple[list[Any], list[float]]],
    all_scores: dict[Any, dict[Any, float]],
) -> None:
    """Same users, same list lengths, same scores position by position; where the items differ,
    the two items score the same (a tie) by the reference's full ranking `all_scores`."""
    assert set(fast) == set(reference), (set(fast) ^ set(reference))
    for user, (items, scores) in fast.items():
        ref_items, ref_scores = reference[user]
        assert len(items) == len(ref_items), (user, items, ref_items)
        assert np.allclose(scores, ref_scores, atol=TIE), (user, scores, ref_scores)
        for mine, theirs in zip(items, ref_items, strict=True):
            if mine != theirs:
                assert abs(all_scores[user][mine] - all_scores[user][theirs]) <= TIE, (user, mine, theirs)
        assert all(a >= b - 1e-7 for a, b in itertools.pairwise(scores)), (user, scores)
