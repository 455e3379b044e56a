"""Hyperparameter search: the config grid -> Spark ParamMaps -> CrossValidator or TVS."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from multiprocessing.pool import ThreadPool
from typing import Any

from pyspark.ml.evaluation import RankingEvaluator
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder, TrainValidationSplit
from pyspark.sql import DataFrame

from clickrec import columns as C
from clickrec.config import TrainConfig
from clickrec.errors import InputError
from clickrec.ml.estimator import RankingALS, RankingALSModel
from clickrec.ml.evaluate import LABEL, PREDICTION, SPARK_METRICS
from clickrec.ml.split import assign_folds, split_temporal

FOLD_COL = "fold"
# config grid key -> RankingALS param name
GRID_PARAMS = {"rank": "rank", "reg_param": "regParam", "alpha": "alpha", "max_iter": "maxIter"}


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order (last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def build_estimator(train: TrainConfig) -> RankingALS:
    """The unfitted estimator with everything but the grid's params fixed from config."""
    return RankingALS(
        implicitPrefs=train.implicit_prefs,
        nonnegative=train.nonnegative,
        checkpointInterval=train.checkpoint_interval,
        seed=train.seed,
        numBlocks=train.num_blocks,
        k=train.k,
        ratingCol=C.RATING,  # to_als_input has already renamed train.rating_col to this
    )


def param_maps(estimator: RankingALS, grid: dict[str, list[Any]]) -> list[dict[Any, Any]]:
    """ParamGridBuilder maps for `grid` (config keys), same order as `expand_grid`."""
    builder = ParamGridBuilder()
    for key, values in grid.items():
        builder = builder.addGrid(estimator.getParam(GRID_PARAMS[key]), values)
    maps = builder.build()
    # ParamGridBuilder's order differs from expand_grid's; sort maps to match it.
    points = expand_grid(grid)
    by_key = {tuple(m[estimator.getParam(GRID_PARAMS[k])] for k in grid): m for m in maps}
    return [by_key[tuple(p[k] for k in grid)] for p in points]


def build_evaluator(train: TrainConfig) -> RankingEvaluator:
    """RankingEvaluator on the selection metric (nDCG@k by default)."""
    return RankingEvaluator(
        predictionCol=PREDICTION, labelCol=LABEL, metricName=SPARK_METRICS[train.metric], k=train.k
    )


@dataclass(frozen=True)
class TuningResult:
    """What the search found: one row per grid point, the best point and its refitted model."""

    points: list[dict[str, Any]]
    mean_metric: list[float]
    std_metric: list[float]
    best_index: int
    best_model: RankingALSModel

    @property
    def best_params(self) -> dict[str, Any]:
        return self.points[self.best_index]


def select_best(means: list[float], points: list[dict[str, Any]]) -> int:
    """Index of the first grid point with the highest mean metric (Spark's argmax rule).

    Raises InputError naming the points whose metric is not a number: numpy's argmax, which
    Spark's bestModel follows, would pick a NaN point as the best one.
    """
    bad = [points[i] for i, m in enumerate(means) if not math.isfinite(m)]
    if bad:
        raise InputError(f"tuning: the selection metric is not a number for grid point(s) {bad}; "
                         "check train.grid (e.g. reg_param 0, or a rank larger than the data supports)")
    return max(range(len(means)), key=lambda i: (means[i], -i))


def temporal_validation(
    train_df: DataFrame,
    estimator: RankingALS,
    maps: list[dict[Any, Any]],
    evaluator: RankingEvaluator,
    *,
    train_ratio: float,
    parallelism: int,
) -> list[float]:
    """The selection metric of every grid point, fitted on each user's earlier rows of the
    training part and validated on their latest 1 - train_ratio, as the temporal test split is.

    Spark's TrainValidationSplit can only split at random, so the split is ours and the fits
    run like its own: `fitMultiple` over a thread pool of `parallelism`.
    """
    fit_part, valid_part = split_temporal(train_df, test_fraction=1.0 - train_ratio)
    fit_part, valid_part = fit_part.persist(), valid_part.persist()
    try:
        models = estimator.fitMultiple(fit_part, maps)

        def fit_and_score(_: int) -> tuple[int, float]:
            index, model = next(models)
            return index, float(evaluator.evaluate(model.transform(valid_part, maps[index])))

        with ThreadPool(processes=min(parallelism, len(maps))) as pool:
            scored = pool.map(fit_and_score, range(len(maps)))
    finally:
        fit_part.unpersist()
        valid_part.unpersist()
    metrics = [math.nan] * len(maps)
    for index, metric in scored:
        metrics[index] = metric
    return metrics


def tune(train_df: DataFrame, train: TrainConfig) -> TuningResult:
    """Search the grid on the training part only; refit the best point on all of it.

    Validation follows the outer split: per-user random folds (or Spark's random
    train/validation split) for `stratified_random`, each user's latest rows for `temporal`.
    """
    grid = train.grid.model_dump()
    points = expand_grid(grid)
    estimator = build_estimator(train)
    maps = param_maps(estimator, grid)
    evaluator = build_evaluator(train)
    if train.split == "temporal":  # the config allows only tuning=train_validation with it
        means = temporal_validation(train_df, estimator, maps, evaluator,
                                    train_ratio=train.train_ratio, parallelism=train.parallelism)
        best = select_best(means, points)
        return TuningResult(points, means, [0.0] * len(means), best, estimator.fit(train_df, maps[best]))
    if train.tuning == "cv":
        data = assign_folds(train_df, num_folds=train.num_folds, seed=train.seed, fold_col=FOLD_COL)
        cv = CrossValidator(
            estimator=estimator, estimatorParamMaps=maps, evaluator=evaluator,
            numFolds=train.num_folds, foldCol=FOLD_COL, parallelism=train.parallelism,
            seed=train.seed,
        )
        cv_model = cv.fit(data)
        means = [float(m) for m in cv_model.avgMetrics]
        stds = [float(s) for s in cv_model.stdMetrics]
        fitted = cv_model.bestModel
    else:
        tvs = TrainValidationSplit(
            estimator=estimator, estimatorParamMaps=maps, evaluator=evaluator,
            trainRatio=train.train_ratio, parallelism=train.parallelism, seed=train.seed,
        )
        tvs_model = tvs.fit(train_df)
        means = [float(m) for m in tvs_model.validationMetrics]
        stds = [0.0] * len(means)
        fitted = tvs_model.bestModel
    best = select_best(means, points)
    assert isinstance(fitted, RankingALSModel)  # the search's estimator is RankingALS
    best_model: RankingALSModel = fitted
    if train.tuning == "cv":
        # bestModel was refitted on `data` (with the fold column); forget the fold column.
        best_model.seen_df = train_df.select(best_model.getOrDefault("userCol"), best_model.getOrDefault("itemCol"))
    return TuningResult(points, means, stds, best, best_model)
