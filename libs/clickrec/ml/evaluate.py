"""Ranking metrics with Spark's RankingEvaluator, plus catalogue coverage.

Every test item counts as relevant. A test user with no recommendation scores 0 (the user is
kept, not dropped), so a model cannot look better by answering fewer users.
"""

from __future__ import annotations

from typing import Literal

from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.ml.recommend import ITEMS_COL

PREDICTION = "prediction"
LABEL = "label"
# RankingEvaluator's metricName values
SparkRankingMetric = Literal["precisionAtK", "recallAtK", "ndcgAtK", "meanAveragePrecisionAtK"]
# our metric name -> RankingEvaluator metricName
SPARK_METRICS: dict[str, SparkRankingMetric] = {
    "precision": "precisionAtK",
    "recall": "recallAtK",
    "ndcg": "ndcgAtK",
    "map": "meanAveragePrecisionAtK",
}


def ranking_frame(
    recs_df: DataFrame,
    test_df: DataFrame,
    *,
    user_col: str = C.USER_IDX,
    item_col: str = C.ITEM_IDX,
    items_col: str = ITEMS_COL,
) -> DataFrame:
    """(user, prediction array<double>, label array<double>) for every user in `test_df`."""
    labels = test_df.groupBy(user_col).agg(
        F.collect_list(F.col(item_col).cast("double")).alias(LABEL)
    )
    preds = recs_df.select(
        user_col, F.transform(F.col(items_col), lambda x: x.cast("double")).alias(PREDICTION)
    )
    return labels.join(preds, user_col, "left").select(
        user_col,
        F.coalesce(F.col(PREDICTION), F.array().cast("array<double>")).alias(PREDICTION),
        LABEL,
    )


def metric_name(metric: str, k: int) -> str:
    """The MLflow name of a metric: precision_at_10, ndcg_at_10, ..."""
    return f"{metric}_at_{k}"


def evaluate_ranking(ranking_df: DataFrame, *, k: int, metrics: tuple[str, ...] = tuple(SPARK_METRICS)) -> dict[str, float]:
    """RankingEvaluator's value for each metric at k, keyed like `ndcg_at_10`."""
    ranking_df = ranking_df.persist()
    try:
        out = {}
        for metric in metrics:
            evaluator = RankingEvaluator(
                predictionCol=PREDICTION, labelCol=LABEL, metricName=SPARK_METRICS[metric], k=k
            )
            out[metric_name(metric, k)] = float(evaluator.evaluate(ranking_df))
        return out
    finally:
        ranking_df.unpersist()


def catalogue_coverage(recs_df: DataFrame, catalogue_size: int, *, items_col: str = ITEMS_COL) -> float:
    """Share of the catalogue that appears in at least one user's list."""
    if catalogue_size <= 0:
        return 0.0
    distinct = recs_df.select(F.explode(items_col).alias("_i")).distinct().count()
    return float(distinct) / float(catalogue_size)
