"""The model the stream folds users into: a registered version's item factors and ALS params.

`load_fold_in_model` loads a version's item factors (with their source item ids) and the
reg_param and alpha its run was trained with, which clickrec.ml.foldin must match to give a
user the factor the model would; `fold_in_lists` turns users' silver rows into top-N lists
with it. `served_version` says which version the stream should fold in with: the one gold
serves the variant with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io.lake import Lake
from clickrec.ml.confidence import is_confident, popular_list
from clickrec.ml.foldin import ItemFactors, fold_in, top_n

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from clickrec.tracking import Tracking

log = logging.getLogger(__name__)

# Run params that hold the champion's ALS hyperparameters (train logs best_<grid key>).
REG_PARAM_KEYS = ("best_reg_param", "reg_param", "regParam")
ALPHA_KEYS = ("best_alpha", "alpha")


@dataclass
class FoldInModel:
    """A registered version's item factors and the hyperparameters fold-in must match."""

    name: str
    version: int
    items: ItemFactors
    item_ids: dict[int, str]  # model item idx -> source item id
    reg_param: float
    alpha: float
    # The variant's popular list as publish wrote it with this version ((item id, score), best
    # first), for the confidence rule; empty when that version is not published for the variant.
    popular: tuple[tuple[str, float], ...] = ()


def _param(params: dict[str, str], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in params:
            return float(params[key])
    return None


def load_fold_in_model(spark: SparkSession, config: ClickrecConfig, lake: Lake, tracking: Tracking,
                       version: int) -> FoldInModel | None:
    """Load `version`'s item factors and its run's reg_param/alpha; None (logged) when unusable."""
    from pyspark.sql import functions as F

    from clickrec.ml.recommend import item_matrix

    ref = tracking.resolve_model_version(version=version)
    params = tracking.run_params(ref["run_id"]) if ref["run_id"] else {}
    reg_param, alpha = _param(params, REG_PARAM_KEYS), _param(params, ALPHA_KEYS)
    if params.get("implicit_prefs", "True") != "True" or params.get("nonnegative", "False") != "False":
        # fold_in solves the implicit, unconstrained user equations; an explicit or NNLS model's
        # users would get factors (and lists) that model would not give them.
        log.error("model %s v%d: fold-in solves implicit, unconstrained ALS and this model has "
                  "implicit_prefs=%s, nonnegative=%s; fold-in is off for it (its published lists stay)",
                  ref["model_name"], version, params.get("implicit_prefs"), params.get("nonnegative"))
        return None
    if reg_param is None or alpha is None:
        log.error("model %s v%d: its run %s logs no %s/%s params; fold-in is off until a model has them",
                  ref["model_name"], version, ref["run_id"], REG_PARAM_KEYS[0], ALPHA_KEYS[0])
        return None
    model = tracking.load_model_version(version)
    ids, mat = item_matrix(model.itemFactors)
    index = lake.read(spark, C.SILVER_ITEM_INDEX)
    known = index.where(F.col(C.IDX).isin([int(i) for i in ids])) if len(ids) < 50_000 else index
    item_ids = {int(r[C.IDX]): str(r[C.SOURCE_ID]) for r in known.select(C.IDX, C.SOURCE_ID).collect()}
    popular = published_popular(lake, config.stream.variant, ref["model_name"], version)
    log.info("fold-in model %s v%d: %d items, rank %d, reg_param %s, alpha %s, popular list of %d",
             ref["model_name"], version, len(ids), mat.shape[1] if mat.size else 0, reg_param, alpha, len(popular))
    return FoldInModel(ref["model_name"], version, ItemFactors(ids, mat), item_ids, reg_param, alpha, popular)


def published_popular(lake: Lake, variant: str, model_name: str, version: int) -> tuple[tuple[str, float], ...]:
    """gold/popular_items' list of `variant` when publish wrote it with (model_name, version), else ()."""
    dt = lake.open(C.GOLD_POPULAR_ITEMS)
    if dt is None:
        return ()
    for row in dt.to_pyarrow_table(columns=[C.VARIANT, C.MODEL_NAME, C.MODEL_VERSION, C.ITEMS]).to_pylist():
        if (row[C.VARIANT], row[C.MODEL_NAME], row[C.MODEL_VERSION]) == (variant, model_name, version):
            ranked = sorted(row[C.ITEMS] or [], key=lambda it: it[C.RANK])
            return tuple((str(it[C.ITEM_ID]), float(it[C.SCORE])) for it in ranked)
    return ()


def served_version(config: ClickrecConfig, lake: Lake) -> int | None:
    """The model version gold serves for stream.variant: the one publish last wrote there.

    The stream folds in with this version rather than the registry alias's, so that its lists
    come from the model the variant is published with: after a rollback (`publish --model-version
    V`, which leaves the aliases alone) it follows V, and a newly promoted champion is taken up
    once it is published. Publish writes gold/popular_items before gold/recommendations, and
    the stream never replaces a batch list of another version
    (clickrec.microbatch.STREAM_REPLACES), so a
    micro-batch that raced a publish leaves its lists to it.
    None when the variant is not published yet (or by another model name): the caller then
    uses the alias.
    """
    dt = lake.open(C.GOLD_POPULAR_ITEMS)
    if dt is None:
        return None
    rows = dt.to_pyarrow_table(columns=[C.VARIANT, C.MODEL_NAME, C.MODEL_VERSION]).to_pylist()
    for row in rows:
        if row[C.VARIANT] == config.stream.variant and row[C.MODEL_NAME] == config.mlflow.model_name:
            return int(row[C.MODEL_VERSION])
    return None


def fold_in_lists(
    model: FoldInModel, interactions: Any, *, n: int, exclude: str, rating_col: str = C.RATING,
    min_interactions: int = 0,
) -> dict[str, tuple[list[tuple[str, float]], str]]:
    """{user_id: ([(item_id, score), ...], source)} for users with a known item (pandas rows of silver).

    The confidence rule (clickrec.ml.confidence): a user with fewer than `min_interactions`
    rows on items the model knows (what their factor is fitted on) gets `model.popular` without
    their excluded items and source `popular`, when the model has a popular list; everyone
    else the fold-in's list and source `stream`.
    """
    out: dict[str, tuple[list[tuple[str, float]], str]] = {}
    for user_id, rows in interactions.groupby(C.USER_ID, sort=True):
        item_idx = rows[C.ITEM_IDX].to_numpy(dtype=np.int64)
        x = fold_in(model.items, item_idx, rows[rating_col].to_numpy(dtype=np.float64),
                    reg_param=model.reg_param, alpha=model.alpha)
        if x is None:
            continue
        dropped = np.ones(len(rows), dtype=bool) if exclude == "seen" else rows[C.PURCHASES].to_numpy() > 0
        known = int((model.items.positions(item_idx) >= 0).sum())
        if model.popular and not is_confident(known, min_interactions):
            excluded = rows[C.ITEM_ID].astype(str).to_numpy()[dropped]
            out[str(user_id)] = (popular_list(model.popular, excluded, n), C.SOURCE_POPULAR)
            continue
        ids, scores = top_n(model.items, x, n=n, exclude=item_idx[dropped])
        out[str(user_id)] = ([(model.item_ids[int(i)], float(s)) for i, s in zip(ids, scores, strict=True)
                              if int(i) in model.item_ids], C.SOURCE_STREAM)
    return out
