"""Helpers for the stream tests: split a generated file, compare silver and gold across lakes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io.lake import Lake

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
