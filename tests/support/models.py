"""A model registered quickly, the way train registers one, for tests that need a model version
without training (publish, serving, the stream's fold-in)."""

from __future__ import annotations

from typing import Any

from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io.delta import table_version
from clickrec.io.lake import Lake
from clickrec.tracking import Tracking

# The stream folds users in with the run's best_* params: these are logged on every model's run.
REG_PARAM, ALPHA, RANK = 0.1, 1.0, 8


def register_model(spark: SparkSession, config: ClickrecConfig, *, alias: str | None = "champion",
                   rank: int = RANK, max_iter: int = 8, reg_param: float = REG_PARAM, alpha: float = ALPHA,
                   seed: int = 7, params: dict[str, Any] | None = None) -> int:
    """Fit implicit ALS on all of silver and register it as train does; return its version.

    The run records the input table versions and best_rank/best_reg_param/best_alpha (plus
    `params`, logged as train logs its fixed params); the version gets `alias` unless it is None.
    Much quicker than clickrec.train.run_train: no split, tuning or evaluation.
    """
    tables = {}
    for t in (C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX):
        path = Lake.from_config(config).path(t)
        tables[t] = (path, int(table_version(spark, path) or 0))
    ratings = spark.read.format("delta").load(tables[C.SILVER_INTERACTIONS][0]).select(
        C.USER_IDX, C.ITEM_IDX, F.col(C.RATING).cast("float").alias(C.RATING))
    model = ALS(rank=rank, maxIter=max_iter, regParam=reg_param, alpha=alpha, implicitPrefs=True, seed=seed,
                userCol=C.USER_IDX, itemCol=C.ITEM_IDX, ratingCol=C.RATING,
                numUserBlocks=2, numItemBlocks=2).fit(ratings)
    tracking = Tracking(config.mlflow)
    with tracking.start_parent_run(f"test-als-rank{rank}", {"clickrec.job": "test"}) as run:
        tracking.log_input_tables(tables)
        tracking.log_params({"best_reg_param": reg_param, "best_alpha": alpha, "best_rank": rank, **(params or {})})
        version = tracking.log_spark_model(
            model, metadata={**{f"input.{t}.version": v for t, (_, v) in tables.items()},
                                     "run_id": run.info.run_id})
    if alias is not None:
        tracking.set_alias(alias, version)
    return version
