"""ALS wrapped so that Spark's CrossValidator optimises a top-k ranking metric.

CrossValidator scores `model.transform(validation)` with an Evaluator. Plain ALSModel.transform
returns one predicted rating per (user, item) row, which no ranking metric can use. Here
`RankingALS.fit` trains ALS and remembers what each user has in the training fold;
`RankingALSModel.transform(validation)` returns one row per validation user with `prediction`
(the top-k item ids, training items excluded) and `label` (the user's validation items), which
is exactly what RankingEvaluator (nDCG@k by default) expects. With a per-user `foldCol`, the
folds mimic the outer split.
"""

from __future__ import annotations

from typing import Any

from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame

from clickrec import columns as C
from clickrec.ml.evaluate import ranking_frame
from clickrec.ml.recommend import recommend_top_k


class _RankingALSParams(Params):
    rank = Param(Params._dummy(), "rank", "number of latent factors", TypeConverters.toInt)
    regParam = Param(Params._dummy(), "regParam", "L2 regularisation", TypeConverters.toFloat)
    alpha = Param(Params._dummy(), "alpha", "implicit confidence scale", TypeConverters.toFloat)
    maxIter = Param(Params._dummy(), "maxIter", "ALS iterations", TypeConverters.toInt)
    implicitPrefs = Param(Params._dummy(), "implicitPrefs", "implicit feedback", TypeConverters.toBoolean)
    nonnegative = Param(Params._dummy(), "nonnegative", "non-negative factors", TypeConverters.toBoolean)
    checkpointInterval = Param(Params._dummy(), "checkpointInterval", "checkpoint every n iterations", TypeConverters.toInt)
    seed = Param(Params._dummy(), "seed", "random seed", TypeConverters.toInt)
    numBlocks = Param(Params._dummy(), "numBlocks", "user and item blocks", TypeConverters.toInt)
    k = Param(Params._dummy(), "k", "list length scored", TypeConverters.toInt)
    userCol = Param(Params._dummy(), "userCol", "user id column", TypeConverters.toString)
    itemCol = Param(Params._dummy(), "itemCol", "item id column", TypeConverters.toString)
    ratingCol = Param(Params._dummy(), "ratingCol", "rating column", TypeConverters.toString)

    def __init__(self) -> None:
        super().__init__()
        self._setDefault(
            rank=10, regParam=0.1, alpha=1.0, maxIter=10, implicitPrefs=True, nonnegative=False,
            checkpointInterval=5, seed=42, numBlocks=10, k=10, userCol=C.USER_IDX, itemCol=C.ITEM_IDX,
            ratingCol=C.RATING,
        )

    def als_params(self) -> dict[str, Any]:
        """The values handed to pyspark's ALS."""
        names = ["rank", "regParam", "alpha", "maxIter", "implicitPrefs", "nonnegative",
                 "checkpointInterval", "seed", "userCol", "itemCol", "ratingCol"]
        params = {n: self.getOrDefault(n) for n in names}
        params["numUserBlocks"] = params["numItemBlocks"] = self.getOrDefault("numBlocks")
        return params


class RankingALS(Estimator, _RankingALSParams):
    """Estimator: ALS whose model's transform yields top-k lists for RankingEvaluator."""

    @keyword_only
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self._set(**self._input_kwargs)  # type: ignore[attr-defined]  # set by @keyword_only

    def build_als(self) -> ALS:
        """The unfitted pyspark ALS for the current params (coldStartStrategy drop)."""
        return ALS(coldStartStrategy="drop", intermediateStorageLevel="MEMORY_AND_DISK",
                   **self.als_params())

    def _fit(self, dataset: DataFrame) -> RankingALSModel:
        als_model = self.build_als().fit(dataset)
        seen = dataset.select(self.getOrDefault("userCol"), self.getOrDefault("itemCol"))
        model = RankingALSModel(als_model, seen)
        return self._copyValues(model)


class RankingALSModel(Model, _RankingALSParams):
    """Fitted: holds the ALSModel and the (user, item) pairs it was trained on."""

    def __init__(self, als_model: ALSModel | None = None, seen_df: DataFrame | None = None) -> None:
        super().__init__()
        self.als_model = als_model
        self.seen_df = seen_df

    def recommend(self, users_df: DataFrame | None = None) -> DataFrame:
        """Top-k lists (user, items, scores) for `users_df`'s users (all users when None)."""
        assert self.als_model is not None
        user_col = self.getOrDefault("userCol")
        user_factors = self.als_model.userFactors
        if users_df is not None:
            wanted = users_df.select(user_col).distinct().withColumnRenamed(user_col, "id")
            user_factors = user_factors.join(wanted, "id", "inner")
        return recommend_top_k(
            user_factors, self.als_model.itemFactors, self.seen_df,
            k=self.getOrDefault("k"), user_col=user_col, item_col=self.getOrDefault("itemCol"),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        user_col, item_col = self.getOrDefault("userCol"), self.getOrDefault("itemCol")
        recs = self.recommend(dataset)
        return ranking_frame(recs, dataset, user_col=user_col, item_col=item_col)

    def copy(self, extra: Any = None) -> RankingALSModel:
        that = super().copy(extra)
        that.als_model = self.als_model
        that.seen_df = self.seen_df
        return that
