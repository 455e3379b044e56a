from __future__ import annotations

import math
from datetime import datetime

import pytest
from pyspark.sql import SparkSession

from clickrec.config import build_config
from clickrec.errors import InputError
from clickrec.ml.promotion import decide_promotion
from clickrec.ml.tuning import build_estimator, expand_grid, param_maps, select_best, tune
from clickrec.train import to_als_input


def test_grid_expansion_every_combination_in_order() -> None:
    grid = {"rank": [8, 16], "reg_param": [0.1], "alpha": [1.0, 10.0], "max_iter": [5]}
    points = expand_grid(grid)
    assert points == [
        {"rank": 8, "reg_param": 0.1, "alpha": 1.0, "max_iter": 5},
        {"rank": 8, "reg_param": 0.1, "alpha": 10.0, "max_iter": 5},
        {"rank": 16, "reg_param": 0.1, "alpha": 1.0, "max_iter": 5},
        {"rank": 16, "reg_param": 0.1, "alpha": 10.0, "max_iter": 5},
    ]


def test_param_maps_follow_the_grid_points() -> None:
    train = build_config({"train": {"grid": {"rank": [4, 8], "reg_param": [0.01, 0.1], "alpha": [2.0], "max_iter": [3]}}}).train
    est = build_estimator(train)
    maps = param_maps(est, train.grid.model_dump())
    points = expand_grid(train.grid.model_dump())
    assert len(maps) == 4
    for m, p in zip(maps, points, strict=True):
        assert m[est.getParam("rank")] == p["rank"]
        assert m[est.getParam("regParam")] == p["reg_param"]
        assert est.copy(m).als_params()["rank"] == p["rank"]


def test_promotion_rule() -> None:
    def decide(*args, **kwargs):  # type: ignore[no-untyped-def]
        return decide_promotion(*args, **{"baseline_score": None, **kwargs})

    assert decide("auto", 0.30, None).promote  # no champion yet
    assert not decide("auto", 0.20, 0.30).promote  # worse challenger stays out
    assert not decide("auto", 0.30, 0.30).promote  # a tie is not a win
    assert decide("auto", 0.31, 0.30).promote
    assert not decide("auto", 0.31, 0.30, margin=0.02).promote  # within the margin
    assert decide("always", 0.10, 0.30).promote
    assert not decide("never", 0.90, 0.30).promote
    blocked = decide("auto", 0.90, None, champion_unavailable="m@champion (v3) cannot be loaded")
    assert not blocked.promote and "cannot be loaded" in blocked.reason  # not "no champion"
    assert decide("always", 0.90, None, champion_unavailable="gone").promote


def test_promotion_needs_a_win_over_popularity_too() -> None:
    # an empty registry: the first model must still beat the popular list readers get without one
    worse = decide_promotion("auto", 0.10, None, baseline_score=0.20)
    assert not worse.promote
    assert worse.reason == "challenger 0.1000 <= popularity baseline 0.2000 + margin 0.0"
    assert not decide_promotion("auto", 0.20, None, baseline_score=0.20).promote  # a tie is not a win
    assert not decide_promotion("auto", 0.25, None, 0.1, baseline_score=0.20).promote  # within the margin
    better = decide_promotion("auto", 0.25, None, baseline_score=0.20)
    assert better.promote and better.reason.startswith("no champion yet; challenger 0.2500 > popularity baseline")
    # with a champion, both must be beaten: the champion on the shared pairs, popularity on the test split
    assert not decide_promotion("auto", 0.40, 0.30, baseline_score=0.50).promote
    assert not decide_promotion("auto", 0.40, 0.30, baseline_score=0.20, challenger_test_score=0.15).promote
    assert not decide_promotion("auto", 0.25, 0.30, baseline_score=0.20).promote
    assert decide_promotion("auto", 0.40, 0.30, baseline_score=0.50, challenger_test_score=0.55).promote
    # forcing and refusing are not affected
    assert decide_promotion("always", 0.10, None, baseline_score=0.20).promote
    assert not decide_promotion("never", 0.90, None, baseline_score=0.20).promote


def test_best_point_is_the_first_highest_and_a_nan_metric_is_an_error() -> None:
    points = [{"rank": 4}, {"rank": 8}, {"rank": 16}]
    assert select_best([0.2, 0.3, 0.3], points) == 1  # ties: the first, as Spark's argmax
    with pytest.raises(InputError, match=r"not a number for grid point\(s\) \[\{'rank': 8\}\]"):
        select_best([0.2, float("nan"), 0.1], points)


def test_tuning_works_when_train_rating_col_is_not_rating(spark: SparkSession) -> None:
    # to_als_input renames the configured column to `rating`; the estimator must read that
    # name, not train.rating_col (which no longer exists after the rename).
    silver = spark.createDataFrame(
        [(u, i, float(1 + (u * i) % 3), datetime(2024, 1, 1 + i)) for u in range(8) for i in range(6)],
        "user_idx INT, item_idx INT, purchases DOUBLE, last_seen TIMESTAMP",
    )
    train = build_config({"train": {
        "rating_col": "purchases", "num_folds": 2,
        "grid": {"rank": [2], "reg_param": [0.1], "alpha": [1.0], "max_iter": [2]},
    }}).train
    result = tune(to_als_input(silver, rating_col="purchases"), train)
    assert len(result.mean_metric) == 1 and math.isfinite(result.mean_metric[0])


def _early_shared_late_cold(spark: SparkSession):  # type: ignore[no-untyped-def]
    """8 users: items 0-5 early (shared by all), then 3 items of their own, latest."""
    rows = [(u, i, 1.0, datetime(2024, 1, 1 + i)) for u in range(8) for i in range(6)]
    rows += [(u, 100 + 3 * u + j, 1.0, datetime(2024, 2, 1 + j)) for u in range(8) for j in range(3)]
    return to_als_input(spark.createDataFrame(
        rows, "user_idx INT, item_idx INT, rating DOUBLE, last_seen TIMESTAMP"))


def test_temporal_split_tunes_on_each_users_latest_rows(spark: SparkSession) -> None:
    # Each user's latest 3 of 9 rows are items nobody has earlier, so a model fitted on the
    # earlier 6 cannot recommend them: validated on the latest rows, every point scores 0.
    # Random validation rows would include the shared early items and score above 0.
    grid = {"rank": [2, 3], "reg_param": [0.1], "alpha": [1.0], "max_iter": [2]}
    temporal = build_config({"train": {
        "split": "temporal", "tuning": "train_validation", "train_ratio": 0.67, "grid": grid,
    }}).train
    result = tune(_early_shared_late_cold(spark), temporal)
    assert result.mean_metric == [0.0, 0.0]
    assert result.best_model.als_model.rank == 2  # refitted at the first best point
    shuffled = build_config({"train": {"tuning": "train_validation", "train_ratio": 0.67, "grid": grid}}).train
    assert max(tune(_early_shared_late_cold(spark), shuffled).mean_metric) > 0.0
