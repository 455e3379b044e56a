"""`clickrec train`: silver at pinned versions -> split -> tune -> evaluate -> MLflow -> registry.

Orchestration only: the split, the estimator, the metrics and the promotion rule are pure parts
of clickrec.ml, Delta reads go through clickrec.io.lake.Lake and every MLflow call through
clickrec.tracking.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.choices import PromoteMode
from clickrec.config import ClickrecConfig, TrainConfig
from clickrec.errors import (
    ChampionUnavailableError,
    ClickrecError,
    ConfigKeyError,
    InputError,
    first_line,
)
from clickrec.io.lake import INGEST_FIRST, Lake
from clickrec.ml.confidence import confident_lists, interaction_counts
from clickrec.ml.estimator import RankingALSModel
from clickrec.ml.evaluate import catalogue_coverage, evaluate_ranking, metric_name, ranking_frame
from clickrec.ml.plots import grid_heatmap, model_vs_baseline
from clickrec.ml.promotion import decide_promotion
from clickrec.ml.recommend import popularity_factors, recommend_top_k
from clickrec.ml.split import split_stratified_random, split_temporal
from clickrec.ml.tuning import tune
from clickrec.spark import NATIVE_BLAS_PACKAGE, blas_in_use
from clickrec.tracking import Tracking, run_name

log = logging.getLogger(__name__)

INPUT_TABLES = (C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX)


@dataclass(frozen=True)
class TrainingInputs:
    """The ALS input (user_idx, item_idx, rating, last_seen) and the table versions it came from."""

    ratings_df: DataFrame
    tables: dict[str, tuple[str, int]]
    interactions_df: DataFrame  # silver/interactions at the pinned version, before the filter


def read_inputs(spark: SparkSession, lake: Lake, *, rating_col: str) -> TrainingInputs:
    """Read silver at the versions current now, so the run can be reproduced by time travel.

    TableNotFoundError when a silver table is missing; ConfigKeyError when `rating_col` (config key
    train.rating_col) is not a silver/interactions column.
    """
    tables: dict[str, tuple[str, int]] = {}
    frames: dict[str, DataFrame] = {}
    for table in INPUT_TABLES:
        version = lake.require_version(spark, table, hint=INGEST_FIRST)
        tables[table] = (lake.path(table), version)
        frames[table] = lake.read(spark, table, version)
    interactions = frames[C.SILVER_INTERACTIONS]
    if rating_col not in interactions.columns:
        raise ConfigKeyError("train.rating_col", f"column {rating_col!r} is not in silver/interactions "
                             f"(columns: {', '.join(interactions.columns)})")
    ratings_df = to_als_input(interactions, rating_col=rating_col)
    return TrainingInputs(ratings_df, tables, interactions)


def to_als_input(interactions_df: DataFrame, *, rating_col: str = C.RATING) -> DataFrame:
    """(user_idx, item_idx, rating, last_seen) from silver; pairs with no positive rating dropped.

    silver/interactions carries the int ids of silver/user_index and silver/item_index, whose
    versions are recorded with the run so that the ids can be mapped back.
    """
    return interactions_df.select(
        F.col(C.USER_IDX).cast("int").alias(C.USER_IDX),
        F.col(C.ITEM_IDX).cast("int").alias(C.ITEM_IDX),
        F.col(rating_col).cast("float").alias(C.RATING),
        F.col(C.LAST_SEEN),
    ).filter(F.col(C.RATING) > 0)


def account_rows(inputs: TrainingInputs, n_train: int, n_test: int, *, rating_col: str) -> dict[str, int]:
    """Where every silver row went: not positive (ALS skips it), train or test.

    Raises RuntimeError when they do not add up: a split that loses or repeats rows is a bug.
    """
    rating = F.col(rating_col)
    counts = inputs.interactions_df.agg(
        F.count(F.lit(1)).alias("read"),
        F.count(F.when(rating.isNull() | (rating.cast("float") <= 0), 1)).alias("not_positive"),
    ).first()
    read, not_positive = (int(counts["read"]), int(counts["not_positive"])) if counts is not None else (0, 0)
    rows = {"read": read, "not_positive": not_positive, "train": n_train, "test": n_test}
    if read != not_positive + n_train + n_test:
        raise RuntimeError(f"silver rows do not add up: {rows}")
    return rows


def check_trainable(ratings_df: DataFrame) -> dict[str, int]:
    """Users, items and rows of the ALS input; InputError when there is nothing to learn from.

    Collaborative filtering needs at least two users and two items, and an item that two users
    share: with one user, one item, or no item seen by more than one user, every list is
    popularity by another name (or ALS fails on it), so the run stops before tuning and names
    the counts.
    """
    per_item = ratings_df.groupBy(C.ITEM_IDX).agg(F.countDistinct(C.USER_IDX).alias("_users"))
    items = per_item.agg(F.count(F.lit(1)).alias("items"), F.max("_users").alias("most")).first()
    users = ratings_df.select(C.USER_IDX).distinct().count()
    n_items = int(items["items"]) if items is not None else 0
    most = int(items["most"] or 0) if items is not None else 0
    stats = {"users": users, "items": n_items, "most_users_per_item": most}
    problems = []
    if users < 2:
        problems.append(f"{users} user{'s' if users != 1 else ''} (at least 2 needed)")
    if n_items < 2:
        problems.append(f"{n_items} item{'s' if n_items != 1 else ''} (at least 2 needed)")
    if users >= 2 and n_items >= 2 and most < 2:
        problems.append(f"no item is shared by two users ({users} users, {n_items} items, each item seen by one user)")
    if problems:
        raise InputError("cannot train a collaborative model on silver/interactions' positive ratings: "
                         + "; ".join(problems))
    return stats


def split(ratings_df: DataFrame, train: TrainConfig) -> tuple[DataFrame, DataFrame]:
    """The configured split of the ALS input."""
    return split_by(ratings_df, train.split, test_fraction=train.test_fraction, seed=train.seed)


def split_by(ratings_df: DataFrame, how: str, *, test_fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """`how` (a train.split value) applied to the ALS input."""
    if how == "temporal":
        return split_temporal(ratings_df, test_fraction=test_fraction)
    if how == "stratified_random":
        return split_stratified_random(ratings_df, test_fraction=test_fraction, seed=seed)
    raise InputError(f"unknown split {how!r}")


def champion_train_pairs(spark: SparkSession, config: ClickrecConfig, lake: Lake,
                         tracking: Tracking) -> tuple[DataFrame | None, str]:
    """The (user_idx, item_idx) pairs the champion was trained on, persisted; or None and why not.

    Rebuilt from what its run recorded: the silver/interactions version it read (time travel)
    and its split parameters. The split is a pure function of those, so these are exactly the
    pairs it saw. None when the run lacks them or that table version can no longer be read.
    """
    try:
        info = tracking.resolve_model_version(alias="champion")
        params = tracking.run_params(info["run_id"]) if info.get("run_id") else {}
    except ClickrecError as exc:  # the model is trained: a registry blip must not lose the run
        return None, f"the champion's run cannot be read: {first_line(exc)}"
    version = info["input_versions"].get(C.SILVER_INTERACTIONS)
    missing = [k for k in ("split", "test_fraction", "seed", "rating_col") if k not in params]
    if version is None or missing:
        return None, (f"the champion's run (v{info['model_version']}) does not record "
                      f"{'its silver version' if version is None else ', '.join(missing)}")
    try:
        silver = lake.read(spark, C.SILVER_INTERACTIONS, version)
        ratings = to_als_input(silver, rating_col=params["rating_col"])
        pairs, _ = split_by(ratings, params["split"], test_fraction=float(params["test_fraction"]),
                            seed=int(params["seed"]))
        pairs = pairs.select(C.USER_IDX, C.ITEM_IDX).persist()
        pairs.count()  # read now: a vacuumed version fails here, not in the middle of scoring
    except Exception as exc:  # Spark's errors for a version whose log or files are gone
        return None, (f"silver/interactions v{version}, which the champion was trained on, cannot be "
                      f"read: {first_line(exc)}")
    return pairs, ""


def compare_with_champion(
    champion: RankingALSModel, challenger: RankingALSModel, champion_train: DataFrame | None,
    train_df: DataFrame, test_df: DataFrame, *, k: int, catalogue: int, selection: str,
) -> dict[str, Any]:
    """Both models' selection metric on the same pairs, neither scored on pairs it trained on.

    Test pairs the champion was trained on would be hits it memorised, so they are left out of
    the comparison, and each model's lists exclude both training sets. Without the champion's
    pairs (`champion_train` None), or when it was trained on every test pair, this falls back
    to the challenger's test split and exclusions (`exact` False).
    """
    own: list[DataFrame] = []  # persisted here, unpersisted at the end
    pairs, seen = test_df, train_df.select(C.USER_IDX, C.ITEM_IDX)
    if champion_train is not None:
        fair_pairs = test_df.join(champion_train, [C.USER_IDX, C.ITEM_IDX], "left_anti").persist()
        own.append(fair_pairs)
        if fair_pairs.count() > 0:  # else the champion trained on every test pair: score them all
            pairs = fair_pairs
            seen = own_seen = seen.unionByName(champion_train).distinct().persist()
            own.append(own_seen)
    try:
        rows = pairs.count()
        champion_score = score_model(champion, seen, pairs, k=k, catalogue=catalogue)[selection]
        challenger_score = score_model(challenger, seen, pairs, k=k, catalogue=catalogue)[selection]
    finally:
        for df in own:
            df.unpersist()
    return {"champion": champion_score, "challenger": challenger_score, "test_rows": rows,
            "exact": pairs is not test_df}


def model_lists(model: RankingALSModel, train_df: DataFrame, test_df: DataFrame) -> DataFrame:
    """`model`'s top-k (its k param) for each test user, their train items excluded."""
    test_users = test_df.select(C.USER_IDX).distinct()
    model.seen_df = train_df.select(C.USER_IDX, C.ITEM_IDX)
    return model.recommend(test_users)


def popular_lists(train_df: DataFrame, test_df: DataFrame, *, k: int) -> DataFrame:
    """The popularity baseline's top-k for each test user, with the same exclusion rule as the model."""
    users, items = popularity_factors(train_df)
    test_users = test_df.select(F.col(C.USER_IDX).alias("id")).distinct()
    return recommend_top_k(users.join(test_users, "id"), items, train_df.select(C.USER_IDX, C.ITEM_IDX), k=k)


def score_model(
    model: RankingALSModel, train_df: DataFrame, test_df: DataFrame, *, k: int, catalogue: int
) -> dict[str, float]:
    """Test metrics of `model`: each test user's top-k with their train items excluded."""
    return _score_lists(model_lists(model, train_df, test_df), test_df, k=k, catalogue=catalogue)


def score_popularity(train_df: DataFrame, test_df: DataFrame, *, k: int, catalogue: int) -> dict[str, float]:
    """The popularity baseline's test metrics, with the same exclusion rule as the model."""
    return _score_lists(popular_lists(train_df, test_df, k=k), test_df, k=k, catalogue=catalogue)


def score_served(
    model: RankingALSModel, train_df: DataFrame, test_df: DataFrame, *, k: int, catalogue: int,
    min_interactions: int,
) -> dict[str, float]:
    """Test metrics of the lists publish would serve: `model`'s, or the popular list for a user
    with fewer than `min_interactions` training interactions (clickrec.ml.confidence)."""
    served = confident_lists(model_lists(model, train_df, test_df), popular_lists(train_df, test_df, k=k),
                             interaction_counts(train_df), min_interactions=min_interactions)
    return _score_lists(served, test_df, k=k, catalogue=catalogue)


def _score_lists(recs: DataFrame, test_df: DataFrame, *, k: int, catalogue: int) -> dict[str, float]:
    """Ranking metrics of top-k lists `recs` on `test_df`, plus their catalogue coverage."""
    recs = recs.persist()  # read twice: by the evaluator and by coverage
    try:
        metrics = evaluate_ranking(ranking_frame(recs, test_df), k=k)
        metrics["coverage"] = catalogue_coverage(recs, catalogue)
    finally:
        recs.unpersist()
    return metrics


def run_train(
    spark: SparkSession, config: ClickrecConfig, *, promote: PromoteMode | None = None,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Train, evaluate, log and register a model; promote it per the rule. Returns the summary.

    `tracking`: the job's MLflow (default: one built from config.mlflow).
    """
    tc = config.train
    tracking = tracking or Tracking(config.mlflow)
    mode: PromoteMode = promote or tc.promote
    started = time.monotonic()
    lake = Lake.from_config(config)
    inputs = read_inputs(spark, lake, rating_col=tc.rating_col)
    check_trainable(inputs.ratings_df)
    train_df, test_df = split(inputs.ratings_df, tc)
    train_df, test_df = train_df.persist(), test_df.persist()
    n_train, n_test = train_df.count(), test_df.count()
    if n_train == 0 or n_test == 0:
        raise InputError(
            f"not enough interactions to train: {n_train} train and {n_test} test rows "
            "(every user needs at least 2 interactions to be in the test split)"
        )
    catalogue = train_df.select(C.ITEM_IDX).distinct().count()
    log.info("split %s: %d train rows, %d test rows, %d items", tc.split, n_train, n_test, catalogue)
    rows = account_rows(inputs, n_train, n_test, rating_col=tc.rating_col)
    fixed = {
        "implicit_prefs": tc.implicit_prefs, "nonnegative": tc.nonnegative, "seed": tc.seed,
        "k": tc.k, "rating_col": tc.rating_col,
    }
    name = run_name("train", config.mlflow.model_name, tc.split)
    with tracking.start_parent_run(name, {"clickrec.job": "train"}) as run:
        tracking.log_input_tables(inputs.tables)
        tracking.log_params({
            "split": tc.split, "test_fraction": tc.test_fraction, "tuning": tc.tuning,
            "num_folds": tc.num_folds, "selection_metric": metric_name(tc.metric, tc.k),
            "train_rows": n_train, "test_rows": n_test, "catalogue_items": catalogue,
            "grid": tc.grid.model_dump(), **fixed,
        })
        log.info("tuning %s over %d grid points", tc.tuning, _grid_size(tc))
        t0 = time.monotonic()
        result = tune(train_df, tc)
        tune_s = time.monotonic() - t0
        blas = blas_in_use(spark)
        tracking.set_tags(blas)
        if not blas["blas"].startswith("native"):
            log.warning("no native BLAS: ALS ran on %s, about 1.6x slower per iteration than with a system "
                        "libblas.so.3 (docs/benchmarks.md); optional, on Debian: apt-get install %s",
                        blas["blas"], NATIVE_BLAS_PACKAGE)
        selection = metric_name(tc.metric, tc.k)
        tracking.log_grid(result.points, result.mean_metric, result.std_metric, selection, fixed)
        tracking.log_params({f"best_{k}": v for k, v in result.best_params.items()})
        log.info("best %s: %s (cv %s %.4f)", tc.tuning, result.best_params, selection,
                 result.mean_metric[result.best_index])

        metrics = score_model(result.best_model, train_df, test_df, k=tc.k, catalogue=catalogue)
        baseline = score_popularity(train_df, test_df, k=tc.k, catalogue=catalogue)
        min_interactions = config.publish.min_user_interactions
        served = (score_served(result.best_model, train_df, test_df, k=tc.k, catalogue=catalogue,
                               min_interactions=min_interactions) if min_interactions > 1 else None)
        tracking.log_metrics({**metrics, **{f"baseline_{k}": v for k, v in baseline.items()},
                              **{f"served_{k}": v for k, v in (served or {}).items()},
                              "tuning_seconds": tune_s})
        tracking.log_figure(grid_heatmap(result.points, result.mean_metric, selection), "grid_heatmap.png")
        tracking.log_figure(model_vs_baseline(metrics, baseline, tc.k), "model_vs_baseline.png")

        champion_score, unavailable = None, None
        try:
            champion = tracking.load_alias_model("champion")
        except ChampionUnavailableError as exc:  # cannot compare: registered, not promoted (unless forced)
            log.error("%s; the new model is registered as challenger and not promoted", exc)
            champion, unavailable = None, str(exc)
            tracking.set_tags({"champion_unavailable": unavailable})
        comparison: dict[str, Any] | None = None
        if champion is not None:
            champ = RankingALSModel(champion, None)
            champ._set(k=tc.k)
            champion_train, why_not = champion_train_pairs(spark, config, lake, tracking)
            if champion_train is None:
                log.warning("comparing with the champion on this run's split only: %s", why_not)
            try:
                comparison = compare_with_champion(
                    champ, result.best_model, champion_train, train_df, test_df,
                    k=tc.k, catalogue=catalogue, selection=selection)
            finally:
                if champion_train is not None:
                    champion_train.unpersist()
            comparison["note"] = why_not or ("" if comparison["exact"] else
                                             "the champion was trained on every test pair: compared on them all")
            champion_score = comparison["champion"]
            tracking.log_metrics({f"champion_{selection}": champion_score,
                                  f"challenger_{selection}_vs_champion": comparison["challenger"]})
            tracking.set_tags({"champion_comparison": json.dumps(comparison)})

        version = tracking.log_spark_model(
            result.best_model.als_model,
            metadata={
                **{f"input.{t}.version": v for t, (_, v) in inputs.tables.items()},
                **{f"input.{t}.path": p for t, (p, _) in inputs.tables.items()},
                "run_id": run.info.run_id,
            },
        )
        tracking.set_alias("challenger", version)
        challenger_score = comparison["challenger"] if comparison is not None else metrics[selection]
        decision = decide_promotion(mode, challenger_score, champion_score, tc.promotion_margin,
                                    baseline_score=baseline[selection], challenger_test_score=metrics[selection],
                                    champion_unavailable=unavailable)
        if decision.promote:
            tracking.set_alias("champion", version)
        tracking.set_tags({"promoted": decision.promote, "promotion_reason": decision.reason,
                           "model_version": version})
        log.info("registered %s v%d as challenger; promoted: %s (%s)",
                 config.mlflow.model_name, version, decision.promote, decision.reason)
    train_df.unpersist()
    test_df.unpersist()
    return {
        "run_id": run.info.run_id,
        "model_name": config.mlflow.model_name,
        "model_version": version,
        "best_params": result.best_params,
        "metrics": metrics,
        "baseline_metrics": baseline,
        # the lists publish serves under publish.min_user_interactions (None: the rule is off)
        "served_metrics": served,
        "champion_score": champion_score,
        "champion_comparison": comparison,
        "promoted": decision.promote,
        "promotion_reason": decision.reason,
        "input_versions": {t: v for t, (_, v) in inputs.tables.items()},
        "rows": rows,
        "blas": blas["blas"],
        "lapack": blas["lapack"],
        "seconds": round(time.monotonic() - started, 1),
    }


def _grid_size(tc: TrainConfig) -> int:
    n = 1
    for values in tc.grid.model_dump().values():
        n *= len(values)
    return n
