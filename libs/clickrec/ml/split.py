"""Seeded train/test splits with no leakage: every (user, item) pair is in exactly one side.

Both splits are pure functions. Randomness comes from a hash of (seed, user, item), not from
`rand()`, so a split is the same whatever the partitioning and however often it is recomputed.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from clickrec import columns as C

_SIDE = "_split_side"


def _in_train(position: Column, n: Column, test_fraction: float) -> Column:
    """A user's row at 1-based `position` of n goes to train when position <= floor(n (1 - f)).

    Microsoft Recommenders' rule (python_stratified_split and python_chrono_split compare
    (cumcount + 1) / count with the train ratio), so the benchmark's test sets have their
    sizes: floor(n * (1 - f)) rows in train. Unlike theirs, a user's first row always stays in
    train, so no user is known only from the test side. The bound is floor(n * (1 - f)) with a
    small tolerance, not position / n <= 1 - f: 1.0 - 0.8 is 0.19999999999999996 in floating
    point, which would leave 1 of 10 rows in train instead of 2.
    """
    bound = F.floor(n * F.lit(1.0 - test_fraction) + F.lit(1e-9))
    return (position <= F.lit(1)) | (position <= bound)


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")


def _split_in_user_order(
    df: DataFrame, order: Column, *, test_fraction: float, user_col: str, item_col: str
) -> tuple[DataFrame, DataFrame]:
    """Keep each user's first floor(n * (1 - f)) rows (>= 1) by `order` in train, the rest in test."""
    _check_fraction(test_fraction)
    w = Window.partitionBy(user_col).orderBy(order, F.col(item_col))
    n = F.count(F.lit(1)).over(Window.partitionBy(user_col))
    marked = df.withColumn(_SIDE, _in_train(F.row_number().over(w), n, test_fraction))
    return (
        marked.filter(F.col(_SIDE)).drop(_SIDE),
        marked.filter(~F.col(_SIDE)).drop(_SIDE),
    )


def split_stratified_random(
    df: DataFrame,
    *,
    test_fraction: float,
    seed: int,
    user_col: str = C.USER_IDX,
    item_col: str = C.ITEM_IDX,
) -> tuple[DataFrame, DataFrame]:
    """Per-user random split: each user keeps floor(n * (1 - f)) rows (>= 1) in train.

    The usual benchmark protocol (Microsoft Recommenders' python_stratified_split). Users with a
    single interaction stay in train only.
    """
    order = F.xxhash64(F.lit(seed), F.col(user_col), F.col(item_col))
    return _split_in_user_order(
        df, order, test_fraction=test_fraction, user_col=user_col, item_col=item_col
    )


def split_temporal(
    df: DataFrame,
    *,
    test_fraction: float,
    time_col: str = C.LAST_SEEN,
    user_col: str = C.USER_IDX,
    item_col: str = C.ITEM_IDX,
) -> tuple[DataFrame, DataFrame]:
    """Per-user temporal split: each user's latest fraction of interactions is the test set."""
    return _split_in_user_order(
        df, F.col(time_col), test_fraction=test_fraction, user_col=user_col, item_col=item_col
    )


def assign_folds(
    df: DataFrame,
    *,
    num_folds: int,
    seed: int,
    fold_col: str = "fold",
    user_col: str = C.USER_IDX,
    item_col: str = C.ITEM_IDX,
) -> DataFrame:
    """Add `fold_col` in [0, num_folds): each user's rows are dealt round-robin over the folds.

    Stratifying by user means every validation fold holds a share of every user with enough
    interactions, like the outer split, so cross-validation scores what the test will score.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be >= 2, got {num_folds}")
    order = F.xxhash64(F.lit(seed + 1), F.col(user_col), F.col(item_col))
    # Offset by a per-user hash so users with few rows do not all land in fold 0.
    offset = F.abs(F.xxhash64(F.lit(seed + 2), F.col(user_col)))
    w = Window.partitionBy(user_col).orderBy(order, F.col(item_col))
    return df.withColumn(
        fold_col, ((F.row_number().over(w) + offset) % F.lit(num_folds)).cast("int")
    )
