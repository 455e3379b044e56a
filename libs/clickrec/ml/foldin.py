"""Fold-in: a user's implicit-ALS factor from their ratings and fixed item factors (pure numpy).

Between retrains the stream gives a returning or brand-new user a factor without touching the
model: with the item factors Y fixed, the user's ALS objective is a ridge regression whose
closed-form solution is exactly the user step of Spark's implicit ALS (Hu, Koren, Volinsky 2008):

    x_u = (YᵀY + Yᵀ(C_u - I)Y + λ·n_u·I)⁻¹ Yᵀ C_u p_u
    c_ui = 1 + alpha·|r_ui|,  p_ui = 1 if r_ui > 0 else 0

Spark scales λ by n_u, the number of the user's positive ratings ("ALS-WR", see
`ALS.computeFactors`: `ls.addRegularization(regParam * numExplicits)`), and YᵀY runs over all
item factors. Matching both makes a training user's fold-in factor equal to the one the model
holds (up to float32 storage), which tests/unit/test_foldin.py checks against a real model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ItemFactors", "fold_in", "top_n"]


class ItemFactors:
    """A model's item factors with YᵀY computed once (every fold-in reuses it)."""

    def __init__(self, ids: np.ndarray, matrix: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        self.matrix = np.asarray(matrix, dtype=np.float64)
        if self.matrix.ndim != 2 or self.matrix.shape[0] != self.ids.shape[0]:
            raise ValueError(f"item factors: {self.ids.shape[0]} ids for a {self.matrix.shape} matrix")
        self.gram = self.matrix.T @ self.matrix
        self.position = {int(i): n for n, i in enumerate(self.ids)}

    @property
    def rank(self) -> int:
        return int(self.matrix.shape[1])

    def positions(self, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Row of each item id in the matrix, -1 for items the model does not know."""
        return np.array([self.position.get(int(i), -1) for i in item_ids], dtype=np.int64)


def fold_in(
    items: ItemFactors,
    item_ids: Sequence[int] | np.ndarray,
    ratings: Sequence[float] | np.ndarray,
    *,
    reg_param: float,
    alpha: float,
) -> np.ndarray | None:
    """The user's factor (float64[rank]) from their (item id, rating) pairs; None without a known item.

    Items the model does not know are ignored: they have no factor to project on. Returns None
    when no rated item is known (the caller then keeps the popular list).
    """
    pos = items.positions(item_ids)
    r = np.asarray(ratings, dtype=np.float64)
    known = pos >= 0
    if not known.any():
        return None
    pos, r = pos[known], r[known]
    y = items.matrix[pos]  # (m, rank)
    c1 = alpha * np.abs(r)  # confidence - 1
    positive = r > 0
    a = items.gram + (y.T * c1) @ y
    n_explicit = int(positive.sum())
    a[np.diag_indices_from(a)] += reg_param * n_explicit
    b = ((1.0 + c1) * positive) @ y
    if n_explicit == 0:
        return np.zeros(items.rank)
    if reg_param > 0:  # a is positive definite
        return np.linalg.solve(a, b)
    # Without regularisation a can be singular or nearly so (where solve would raise or blow up):
    # the least-norm solution, as a pseudo-inverse gives.
    return np.linalg.lstsq(a, b, rcond=None)[0]


def top_n(
    items: ItemFactors,
    factor: np.ndarray,
    *,
    n: int,
    exclude: Sequence[int] | np.ndarray = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The n best (item ids, scores) for `factor`, excluded ids left out, ties by item id.

    Same order rule as clickrec.ml.recommend.top_k_scores (score descending, then id).
    """
    scores = items.matrix @ np.asarray(factor, dtype=np.float64)
    drop = items.positions(exclude)
    scores[drop[drop >= 0]] = -np.inf
    finite = np.flatnonzero(np.isfinite(scores))
    if 0 < n < finite.size:
        # Sort only the items scoring at least the n-th best (ties with it included, so the id
        # rule still decides among them), not the whole catalogue: O(items) instead of O(items log items).
        nth_best = -np.partition(-scores[finite], n - 1)[n - 1]
        finite = finite[scores[finite] >= nth_best]
    order = finite[np.lexsort((items.ids[finite], -scores[finite]))][:n]
    return items.ids[order], scores[order]
