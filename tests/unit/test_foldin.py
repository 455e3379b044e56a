"""Fold-in (clickrec.ml.foldin) against a real Spark implicit-ALS model.

Spark's last ALS step solves every user against the final item factors, so folding a training
user in with the same ratings, regParam and alpha must give back the factor the model holds.
Tolerance: Spark stores factors as float32 (relative rounding ~6e-8 per entry) and solves in
double by Cholesky; the numpy solve in float64 on those float32 item factors differs only by
that rounding carried through a well-conditioned (λ·n_u > 0) rank-8 system, so 1e-4 relative
(to the factor's norm) is generous yet far below what a wrong formula gives (a missing n_u
scaling or confidence term moves factors by >10%).
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession

from clickrec.ml.foldin import ItemFactors, fold_in, top_n

REG, ALPHA, RANK = 0.1, 2.0, 8
USERS, ITEMS, GROUPS = 120, 60, 4


def planted_ratings(seed: int = 3) -> list[tuple[int, int, float]]:
    """Each user rates ~10 items of its own group (item i is in group i % GROUPS) and 2 others."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(USERS):
        own = np.arange(u % GROUPS, ITEMS, GROUPS)
        picks = set(rng.choice(own, size=10, replace=False).tolist())
        picks |= set(rng.choice(ITEMS, size=2, replace=False).tolist())
        rows += [(u, int(i), float(rng.integers(1, 6))) for i in sorted(picks)]
    return rows


@pytest.fixture(scope="module")
def model(spark: SparkSession) -> tuple[object, list[tuple[int, int, float]]]:
    rows = planted_ratings()
    df = spark.createDataFrame(rows, "user int, item int, rating float")
    als = ALS(rank=RANK, maxIter=6, regParam=REG, alpha=ALPHA, implicitPrefs=True, seed=1,
              userCol="user", itemCol="item", ratingCol="rating", numUserBlocks=2, numItemBlocks=2)
    return als.fit(df), rows


def item_factors(als_model: object) -> ItemFactors:
    pdf = als_model.itemFactors.toPandas()  # type: ignore[attr-defined]
    return ItemFactors(pdf["id"].to_numpy(), np.vstack([np.asarray(f, dtype=np.float32) for f in pdf["features"]]))


def test_fold_in_reproduces_the_models_user_factors(model: tuple[object, list]) -> None:
    als_model, rows = model
    items = item_factors(als_model)
    users = {r["id"]: np.asarray(r["features"], dtype=np.float64)
             for r in als_model.userFactors.collect()}  # type: ignore[attr-defined]
    worst = 0.0
    for u in range(USERS):
        mine = [(i, r) for uu, i, r in rows if uu == u]
        x = fold_in(items, [i for i, _ in mine], [r for _, r in mine], reg_param=REG, alpha=ALPHA)
        assert x is not None
        worst = max(worst, float(np.linalg.norm(x - users[u]) / np.linalg.norm(users[u])))
    assert worst < 1e-4, worst
    # and a wrong regularisation (λ not scaled by the user's rating count) is far off
    u0 = [(i, r) for uu, i, r in rows if uu == 0]
    wrong = fold_in(items, [i for i, _ in u0], [r for _, r in u0], reg_param=REG / len(u0), alpha=ALPHA)
    assert np.linalg.norm(wrong - users[0]) / np.linalg.norm(users[0]) > 1e-2


def test_new_user_of_one_category_gets_that_category(model: tuple[object, list]) -> None:
    als_model, _ = model
    items = item_factors(als_model)
    for group in range(GROUPS):
        viewed = [group + GROUPS * k for k in (0, 3, 5)]  # three items of one group, a light user
        x = fold_in(items, viewed, [1.0, 2.0, 1.0], reg_param=REG, alpha=ALPHA)
        assert x is not None
        ids, scores = top_n(items, x, n=10, exclude=viewed)
        assert len(ids) == 10 and not set(ids) & set(viewed)
        assert all(np.diff(scores) <= 0)
        same = sum(int(i) % GROUPS == group for i in ids)
        assert same >= 8, (group, ids.tolist())


def test_unknown_items_only_gives_none_and_excluded_items_never_come_back() -> None:
    items = ItemFactors(np.array([10, 11, 12]), np.eye(3))
    assert fold_in(items, [99], [3.0], reg_param=0.1, alpha=1.0) is None
    x = fold_in(items, [10, 99], [3.0, 1.0], reg_param=0.1, alpha=1.0)
    assert x is not None and x[0] > 0 and x[1] == 0 and x[2] == 0
    ids, _ = top_n(items, x, n=3, exclude=[10])
    assert 10 not in ids.tolist() and len(ids) == 2
    assert top_n(items, np.zeros(3), n=2)[0].tolist() == [10, 11]  # ties by id


def test_fold_in_without_regularisation_on_a_singular_system_gives_the_least_norm_factor() -> None:
    items = ItemFactors(np.array([1, 2]), np.array([[1.0, 0.0], [1.0, 0.0]]))  # second dimension unused
    x = fold_in(items, [1], [1.0], reg_param=0.0, alpha=1.0)
    assert x is not None and np.all(np.isfinite(x))
    assert x[1] == 0.0 and x[0] > 0  # np.linalg.solve raises LinAlgError on this system


def test_top_n_equals_a_full_sort_with_many_ties_and_exclusions() -> None:
    """top_n sorts only the candidates at least as good as the n-th; the result is a full sort's."""
    rng = np.random.default_rng(11)
    for trial in range(200):
        count = int(rng.integers(1, 40))
        ids = rng.permutation(1000)[:count]
        matrix = rng.integers(-2, 3, size=(count, 2)).astype(float)  # few distinct scores: many ties
        items = ItemFactors(ids, matrix)
        factor = rng.integers(-2, 3, size=2).astype(float)
        exclude = rng.choice(ids, size=int(rng.integers(0, count + 1)), replace=False)
        n = int(rng.integers(1, count + 3))
        got_ids, got_scores = top_n(items, factor, n=n, exclude=exclude)
        scores = matrix @ factor
        expected = sorted(((-s, int(i)) for i, s in zip(ids, scores, strict=True) if i not in set(exclude.tolist())))[:n]
        assert got_ids.tolist() == [i for _, i in expected], trial
        assert got_scores.tolist() == [-s for s, _ in expected], trial
