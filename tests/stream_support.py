"""Helpers for the stream tests: split a generated file, register a model whose run logs the
hyperparameters fold-in needs, write a config file for subprocess runs, compare silver tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pyspark.ml.recommendation import ALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec import tracking
from clickrec.config import ClickrecConfig
from clickrec.io.delta import table_version
from clickrec.io.lake import Lake

REG_PARAM, ALPHA, RANK = 0.1, 1.0, 8
# silver columns compared across lakes: the surrogate int ids are given in arrival order
# (one batch vs several micro-batches), so they are checked against each lake's own index.
SILVER_VALUE_COLUMNS = (C.USER_ID, C.ITEM_ID, C.VIEWS, C.DWELL_SECONDS, C.CARTS, C.PURCHASES,
                        C.FIRST_SEEN, C.LAST_SEEN, C.RATING)


def split_csv(source: Path, first: Path, second: Path, fraction: float) -> tuple[int, int]:
    """Write the header plus the first `fraction` of rows to `first`, the rest to `second`."""
    lines = source.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    cut = int(len(rows) * fraction)
    first.write_text(header + "".join(rows[:cut]))
    second.write_text(header + "".join(rows[cut:]))
    return cut, len(rows) - cut


def register_model(spark: SparkSession, config: ClickrecConfig, *, alias: str = "champion",
                   max_iter: int = 8, seed: int = 7, params: dict[str, Any] | None = None) -> int:
    """Fit implicit ALS on all of silver and register it with its run's best_reg_param/best_alpha
    (and `params`, logged on the run as train logs its fixed params)."""
    tables = {}
    for t in (C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX):
        path = Lake.from_config(config).path(t)
        tables[t] = (path, int(table_version(spark, path) or 0))
    ratings = spark.read.format("delta").load(tables[C.SILVER_INTERACTIONS][0]).select(
        C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("float").alias(C.RATING))
    model = ALS(rank=RANK, maxIter=max_iter, regParam=REG_PARAM, alpha=ALPHA, implicitPrefs=True, seed=seed,
                userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.RATING,
                numUserBlocks=2, numItemBlocks=2).fit(ratings)
    with tracking.start_parent_run(config, "test-stream-model", {"clickrec.job": "test"}) as run:
        tracking.log_input_tables(tables)
        tracking.log_params({"best_reg_param": REG_PARAM, "best_alpha": ALPHA, "best_rank": RANK, **(params or {})})
        version = tracking.log_spark_model(
            model, config, metadata={**{f"input.{t}.version": v for t, (_, v) in tables.items()},
                                     "run_id": run.info.run_id})
    tracking.set_alias(config, alias, version)
    return version


def write_config_file(config: ClickrecConfig, path: Path) -> Path:
    """The config as YAML, for `clickrec ... --config` in a subprocess."""
    data: dict[str, Any] = json.loads(config.model_dump_json())
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def silver_values(spark: SparkSession, config: ClickrecConfig) -> DataFrame:
    return Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS).select(*SILVER_VALUE_COLUMNS)


def assert_same(actual: DataFrame, expected: DataFrame) -> None:
    """Exact multiset equality of two small frames, with a few differing rows in the message."""
    missing = expected.exceptAll(actual).limit(5).collect()
    extra = actual.exceptAll(expected).limit(5).collect()
    assert not missing and not extra, f"missing {missing}, unexpected {extra}"
    assert actual.count() == expected.count() > 0


def assert_ids_match_index(spark: SparkSession, config: ClickrecConfig) -> None:
    """Every silver row's user_idx/item_idx is its id's entry in the lake's own index tables."""
    silver = Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS)
    users = Lake.from_config(config).read(spark, C.SILVER_USER_INDEX)
    items = Lake.from_config(config).read(spark, C.SILVER_ITEM_INDEX)
    joined = silver.join(users.select(F.col(C.SOURCE_ID).alias(C.USER_ID), F.col(C.IDX).alias("_u")), C.USER_ID) \
        .join(items.select(F.col(C.SOURCE_ID).alias(C.ITEM_ID), F.col(C.IDX).alias("_i")), C.ITEM_ID)
    assert joined.count() == silver.count()
    assert joined.where((F.col("_u") != F.col(C.USER_IDX)) | (F.col("_i") != F.col(C.ITEM_IDX))).count() == 0


def gold_lists(spark: SparkSession, config: ClickrecConfig) -> dict[str, dict[str, Any]]:
    """{user_id: row as dict} of gold/recommendations (variant champion)."""
    df = Lake.from_config(config).read(spark, C.GOLD_RECOMMENDATIONS)
    return {r[C.USER_ID]: r.asDict(recursive=True) for r in df.where(F.col(C.VARIANT) == "champion").collect()}
