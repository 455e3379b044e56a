"""Comparison of two top-k outputs (e.g. the fast top-k and Spark's reference) up to score ties."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from pyspark.sql import DataFrame

from clickrec import columns as C

TIE = 1e-4  # float32 GEMM in numpy vs the JVM's dot products: equal scores within this are ties


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
