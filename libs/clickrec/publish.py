"""`clickrec publish`: a registered model's top-N lists -> gold/recommendations, announced on Kafka.

Orchestration only. The model comes from the MLflow registry (clickrec.tracking), the top-N from
the blocked scorer clickrec.ml.recommend.recommend_top_k (seen-item masking in mapInPandas), the
row shapes from clickrec.transforms.recommendations, the tables from clickrec.io.lake (reads, time travel)
and clickrec.io.delta (writes), and the
announcement from clickrec.io.kafka.

- Variant = the alias published (champion or challenger), so both can be served side by side.
  `--model-version V` republishes version V under that variant: the rollback.
- Ids are mapped back through silver/user_index and silver/item_index at the versions the model
  was trained on (the run's `input.<table>.version` tags), else the latest. The index tables
  are append-only, so either mapping is right; the pinned one is reproducible.
- Exclusions (publish.exclude: bought or seen) come from the latest silver/interactions: an
  item bought after training is not recommended either. The popular list comes from the
  interactions the model was trained on.
- publish.min_user_interactions (clickrec.ml.confidence): a user the model was fitted on fewer
  training rows for gets the popular list (their exclusions applied) with source `popular`.
- Writes are MERGEs keyed by (user_id, variant) and (variant) of only the rows that differ
  (updated_at does not count: it says when a list last changed), which also delete the
  variant's batch (and popular) rows of users the published model does not have (lists the stream wrote for
  users newer than the model stay). The table then holds the published model's lists, and a
  rerun finds no difference and commits nothing.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clickrec import columns as C
from clickrec.choices import Alias
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError
from clickrec.io import conflicts, delta, leases
from clickrec.io.kafka import send_json
from clickrec.io.lake import INGEST_FIRST, Lake
from clickrec.ml.confidence import COUNT_COL, confident_lists, interaction_counts
from clickrec.ml.recommend import popularity_factors, recommend_top_k
from clickrec.tracking import Tracking
from clickrec.transforms.recommendations import (
    attach_user_ids,
    exclusion_pairs,
    popular_items,
    rank_rows,
    serving_rows,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def read_pinned(spark: SparkSession, lake: Lake, table: str, version: int | None) -> tuple[DataFrame, int]:
    """`table` at `version` when given and still readable, else the latest; returns (df, version read).

    TableNotFoundError when the table does not exist.
    """
    from pyspark.errors import AnalysisException

    latest = lake.require_version(spark, table, hint=INGEST_FIRST)
    if version is not None and version <= latest:
        try:
            df = lake.read(spark, table, version)
            df.schema  # noqa: B018 -- resolves the snapshot now, so a vacuumed version fails here
            return df, version
        except AnalysisException as exc:
            log.warning("%s v%d is not readable (%s); using the latest v%d", table, version, exc, latest)
    elif version is not None:
        log.warning("%s v%d recorded by the model is newer than the table's v%d; using the latest",
                    table, version, latest)
    return lake.read(spark, table), latest


def model_message(*, model_name: str, model_version: int, variant: str, rollback: bool,
                  table_version: int | None, popular_table_version: int | None, users: int,
                  published_at: datetime) -> dict[str, Any]:
    """The JSON announced on kafka.models_topic after a publish, for the stream and other readers."""
    return {
        "event": "model_published",
        "model_name": model_name,
        "model_version": model_version,
        "alias": variant,
        "variant": variant,
        "rollback": rollback,
        "table": C.GOLD_RECOMMENDATIONS,
        "table_version": table_version,
        "popular_table": C.GOLD_POPULAR_ITEMS,
        "popular_table_version": popular_table_version,
        "users": users,
        "published_at": published_at.replace(tzinfo=UTC).isoformat(),
    }


def announce(config: ClickrecConfig, message: dict[str, Any]) -> dict[str, Any]:
    """Send `message` to kafka.models_topic, or say it was skipped when no Kafka is configured."""
    topic = config.kafka.models_topic
    if not config.kafka.bootstrap_servers:
        log.info("kafka.bootstrap_servers is null (embedded default): skipped the '%s' announcement", topic)
        return {"sent": False, "topic": topic, "reason": "kafka.bootstrap_servers is null"}
    meta = send_json(config.kafka, topic, message, key=message["variant"],
                     timeout_seconds=config.publish.announce_timeout_seconds)
    return {"sent": True, **meta}


def model_training_rows(trained_inter: DataFrame, params: dict[str, str]) -> tuple[DataFrame, str]:
    """The (user_idx, item_idx) rows the model's user factors were fitted on, and how they were found.

    Its run's split (split, test_fraction, seed, rating_col params, as train logs them) applied
    to silver at the version it was trained on: exactly its training part. A run that does not
    record them (a model registered another way) counts every row of that version.
    """
    from clickrec.train import split_by, to_als_input

    if all(k in params for k in ("split", "test_fraction", "seed", "rating_col")):
        ratings = to_als_input(trained_inter, rating_col=params["rating_col"])
        part, _ = split_by(ratings, params["split"], test_fraction=float(params["test_fraction"]),
                           seed=int(params["seed"]))
        return part.select(C.USER_IDX, C.ITEM_IDX), f"the training part of its run's {params['split']} split"
    return trained_inter.select(C.USER_IDX, C.ITEM_IDX), "every row (its run records no split)"


def confident_top(top: DataFrame, trained_inter: DataFrame, excluded: DataFrame,
                  params: dict[str, str], *, n: int, min_interactions: int) -> tuple[DataFrame, str]:
    """`top` with the confidence rule applied: users fitted on fewer than `min_interactions`
    rows get the popular list of `trained_inter` (gold/popular_items' order, `excluded` left
    out) and source `popular`. Returns (user_idx, items, scores, source) and how rows were counted.
    """
    from pyspark.sql import functions as F

    rows, counted = model_training_rows(trained_inter, params)
    counts = interaction_counts(rows)
    low = counts.where(F.col(COUNT_COL) < min_interactions).select(
        F.col(C.USER_IDX).alias("id"), F.array(F.lit(1.0).cast("float")).alias("features"))
    _, items = popularity_factors(trained_inter.select(C.USER_IDX, C.ITEM_IDX))
    popular_top = recommend_top_k(low, items, excluded, k=n)
    return confident_lists(top, popular_top, counts, min_interactions=min_interactions), counted


def _check_columns(df: DataFrame, table: str, needed: tuple[str, ...], why: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(f"{table} has no column(s) {', '.join(missing)}, needed {why} "
                         f"(columns: {', '.join(df.columns)})")


def _restore_popular(spark: SparkSession, lake: Lake, popular: DataFrame, *, variant: str,
                     version: int | None) -> None:
    """Give `variant`'s row in gold/popular_items back the content it had at `version`."""
    from pyspark.sql import functions as F

    before = (lake.read(spark, C.GOLD_POPULAR_ITEMS, version).where(F.col(C.VARIANT) == variant)
              if version is not None else spark.createDataFrame([], popular.schema))
    try:
        conflicts.retry_on_conflict(lambda _: delta.merge_changes(
            lake.path(C.GOLD_POPULAR_ITEMS), before, keys=(C.VARIANT,), delete_unmatched_where=f"t.`{C.VARIANT}` = '{variant}'",
        ), what=C.GOLD_POPULAR_ITEMS)
    except Exception:  # the original error is the one to report; a rerun repairs the row
        log.exception("could not restore %s for variant %s to version %s", C.GOLD_POPULAR_ITEMS, variant, version)


def publish(
    spark: SparkSession,
    config: ClickrecConfig,
    *,
    alias: Alias = "champion",
    model_version: int | None = None,
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Publish the top-N lists of `alias` (or of `model_version`, as variant `alias`); the summary.

    Raises NotFoundError when the registry has no such alias or version or silver is missing,
    InputError when silver lacks a column the exclusion rule needs, ServiceError when a configured Kafka
    does not acknowledge the announcement (the tables are already written then; a rerun
    rewrites nothing and announces again). `alias` is one of clickrec.choices.ALIASES (the CLI
    refuses others); `tracking`: the job's MLflow (default: one built from config.mlflow).
    """
    from pyspark import StorageLevel

    tracking = tracking or Tracking(config.mlflow)
    pc = config.publish
    started = time.monotonic()
    lake = Lake.from_config(config)
    leases.refuse_beside_stream(lake, "publish", commit=config.s3.commit)
    ref = tracking.resolve_model_version(alias=alias, version=model_version)
    version = ref["model_version"]
    log.info("publishing %s v%d as variant %s (top %d, exclude %s)",
             ref["model_name"], version, alias, pc.n, pc.exclude)
    model = tracking.load_model_version(version)
    pinned = ref["input_versions"]

    user_index, user_index_v = read_pinned(spark, lake, C.SILVER_USER_INDEX, pinned.get(C.SILVER_USER_INDEX))
    item_index, item_index_v = read_pinned(spark, lake, C.SILVER_ITEM_INDEX, pinned.get(C.SILVER_ITEM_INDEX))
    latest_inter, latest_inter_v = read_pinned(spark, lake, C.SILVER_INTERACTIONS, None)
    trained_inter, trained_inter_v = read_pinned(
        spark, lake, C.SILVER_INTERACTIONS, pinned.get(C.SILVER_INTERACTIONS)
    )
    needed = (C.USER_IDX, C.ITEM_IDX) + ((C.PURCHASES,) if pc.exclude == "bought" else ())
    _check_columns(latest_inter, C.SILVER_INTERACTIONS, needed, f"by publish.exclude={pc.exclude}")

    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    excluded = exclusion_pairs(latest_inter, exclude=pc.exclude)
    top = recommend_top_k(model.userFactors, model.itemFactors, excluded, k=pc.n)
    counted = None
    if pc.min_user_interactions > 1:
        params = tracking.run_params(ref["run_id"]) if ref["run_id"] else {}
        top, counted = confident_top(top, trained_inter, excluded, params, n=pc.n,
                                     min_interactions=pc.min_user_interactions)
    # under the rule, each user's source (batch, or popular) goes along
    lists = top.transform(rank_rows, item_index_df=item_index, keep=(C.SOURCE,) if counted is not None else ())
    rows = serving_rows(
        lists.transform(attach_user_ids, user_index_df=user_index),
        variant=alias, model_name=ref["model_name"], model_version=version, updated_at=now,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        users = rows.count()
        popular_users = rows.where(f"`{C.SOURCE}` = '{C.SOURCE_POPULAR}'").count() if counted is not None else 0
        model_users = model.userFactors.count()
        # gold/popular_items first: it names the version a variant is published with, and the
        # stream folds users in with that version, so it stops writing the old model's lists
        # before this MERGE replaces them (see clickrec.ml.foldin_model.served_version). Both writes happen under
        # the lease, so a lease that cannot be taken changes nothing, and the stream holds its
        # gold commits from the switch on.
        popular = popular_items(trained_inter, n=pc.popular_n, variant=alias, model_name=ref["model_name"],
                                model_version=version, updated_at=now)
        pop_path, rec_path = lake.path(C.GOLD_POPULAR_ITEMS), lake.path(C.GOLD_RECOMMENDATIONS)
        same_model = f"t.`{C.MODEL_NAME}` = '{ref['model_name']}' AND t.`{C.MODEL_VERSION}` = {version}"
        lease = leases.hold(lake, C.GOLD_RECOMMENDATIONS, owner=f"publish-{alias}-v{version}-{now.isoformat()}")
        with lease:  # the stream MERGEs into the variant too: it holds its commits meanwhile
            pop_before = lake.version(spark, C.GOLD_POPULAR_ITEMS)
            pop_changes = conflicts.retry_on_conflict(
                lambda _: delta.merge_changes(pop_path, popular, keys=(C.VARIANT,),
                                              ignore_changes=(C.UPDATED_AT,)),
                what=C.GOLD_POPULAR_ITEMS,
            )
            try:
                rec_changes = conflicts.retry_on_conflict(
                    lambda _: delta.merge_changes(
                        rec_path, rows, keys=C.RECOMMENDATION_KEYS, partition_by=(C.VARIANT,),
                        properties=C.TABLE_PROPERTIES[C.GOLD_RECOMMENDATIONS],
                        ignore_changes=(C.UPDATED_AT,), target_filter=f"t.`{C.VARIANT}` = '{alias}'",
                        # the stream's list from this same model folds in newer events: it stays
                        keep_where=f"t.`{C.SOURCE}` = '{C.SOURCE_STREAM}' AND {same_model}",
                        # users without a list now: batch lists, and lists of another model, go
                        delete_unmatched_where=(f"t.`{C.VARIANT}` = '{alias}' AND "
                                                f"(t.`{C.SOURCE}` IN ('{C.SOURCE_BATCH}', '{C.SOURCE_POPULAR}') "
                                                f"OR NOT ({same_model}))"),
                    ),
                    what=C.GOLD_RECOMMENDATIONS,
                )
            except Exception:
                # popular_items already names the new version: put this variant's row back while
                # the lease still holds the stream, so a failed publish leaves gold describing
                # the old model; a rerun does the whole switch. (A killed publish cannot do this:
                # rerun it with the same arguments.)
                _restore_popular(spark, lake, popular, variant=alias, version=pop_before)
                raise
    finally:
        rows.unpersist()
    compute_s = time.monotonic() - started

    rec_v, pop_v = lake.version(spark, C.GOLD_RECOMMENDATIONS), lake.version(spark, C.GOLD_POPULAR_ITEMS)

    message = model_message(model_name=ref["model_name"], model_version=version, variant=alias,
                            rollback=model_version is not None, table_version=rec_v,
                            popular_table_version=pop_v, users=users, published_at=now)
    announcement = announce(config, message)
    seconds = time.monotonic() - started
    if users < model_users:
        log.warning("%d of the model's %d users have no id in silver/user_index and were not published",
                    model_users - users, model_users)
    return {
        "model_name": ref["model_name"],
        "model_version": version,
        "variant": alias,
        "rollback": model_version is not None,
        "run_id": ref["run_id"],
        "n": pc.n,
        "exclude": pc.exclude,
        "users": users,
        "model_users": model_users,
        # the confidence rule: users served the popular list (fewer training interactions than the minimum)
        "min_user_interactions": pc.min_user_interactions,
        "popular_users": popular_users,
        "interactions_counted": counted,
        "input_versions": {
            C.SILVER_USER_INDEX: user_index_v,
            C.SILVER_ITEM_INDEX: item_index_v,
            f"{C.SILVER_INTERACTIONS} (exclusions)": latest_inter_v,
            f"{C.SILVER_INTERACTIONS} (popular)": trained_inter_v,
        },
        "tables": {C.GOLD_RECOMMENDATIONS: rec_v, C.GOLD_POPULAR_ITEMS: pop_v},
        "changes": {C.GOLD_RECOMMENDATIONS: rec_changes, C.GOLD_POPULAR_ITEMS: pop_changes},
        "announcement": announcement,
        "updated_at": now.isoformat(),
        "seconds": round(seconds, 2),
        "users_per_second": round(users / compute_s, 1) if compute_s > 0 else None,
    }

