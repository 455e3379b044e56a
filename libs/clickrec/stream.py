"""`clickrec stream` and `clickrec replay`: the Kafka clickstream keeps bronze, silver and gold fresh.

One named Structured Streaming query reads kafka.clickstream_topic; its checkpoint lives under
the lake (`_checkpoints/stream/<query_name>`), so a restarted driver resumes at the last
committed micro-batch. Each micro-batch (`BatchProcessor`, safe to run twice) is small, so it
costs two Spark jobs and commits with delta-rs (clickrec.io.delta_rs: tens of milliseconds
where a Spark Delta commit costs a second or two of fixed work):

1. parse, validate and hash the events with the very function batch ingest uses
   (clickrec.ingest.stage_event_lines, JSON lines) and collect them (Spark job 1); rejected
   rows go to bronze/quarantine once per batch (txnAppId = query name, txnVersion = batch id);
2. read the batch's users' bronze history and append only the event_ids it does not hold,
   in one commit tagged (query, batch id);
3. recompute those users' silver/interactions from all their events with the batch path's
   transform (clickrec.transforms.clickstream.events_to_interactions, Spark job 2 on local
   rows), so dwell that needed an event of a later batch is fixed when that batch comes; new
   ids go into the index tables by assign_new_ids' rule, with a MERGE that a concurrent batch
   ingest's ids cannot slip past (BatchProcessor._ids); only rows whose values changed are
   MERGEd, and a MERGE that lost a commit race is redone from a fresh read;
4. fold each affected user in against the champion's item factors (clickrec.ml.foldin, with
   the champion run's reg_param and alpha), rescore their top-N without the bought (or seen)
   items, and MERGE the lists into gold/recommendations keyed by (user_id, variant) with
   source `stream`. A user with no interaction on an item the model knows gets no row, so
   readers keep serving them the popular list.

A batch cut anywhere is replayed with the same offsets: its events are found in bronze, silver
is recomputed to the same values (no commit when nothing changed) and gold is upserted again.
Until batch ingest has created bronze, silver and the indexes, micro-batches take the batch
path's Spark update (clickrec.ingest.ingest_valid_events), which creates them.

Before each batch the stream looks up the model version that gold/popular_items says the
variant is published with (`served_version`, one small delta-rs read; the registry alias until
the variant is published): a new champion, once publish has written it and announced it on the
`models` topic, is loaded before the next batch, and a rollback to an older version is followed.
Progress (input and processing rates, batch duration, offsets behind latest) comes from a
StreamingQueryListener into the log and `<lake>/_metrics/stream/<query_name>.json`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clickrec import columns as C
from clickrec import tracking
from clickrec.config import ClickrecConfig
from clickrec.errors import (
    ConcurrentWriteError,
    InputError,
    NotFoundError,
    ServiceError,
    first_line,
)
from clickrec.io import conflicts, delta, delta_rs, leases
from clickrec.io.delta_reader import open_table
from clickrec.io.files import delete_path
from clickrec.ml.foldin import ItemFactors, fold_in, top_n

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

# The stream replaces a gold list it wrote itself, or one computed with the same model; a
# batch list of another model version (publish just switched models) is left to publish.
STREAM_REPLACES = (f"t.`{C.SOURCE}` = '{C.SOURCE_STREAM}' OR "
                   f"(t.`{C.MODEL_NAME}` = s.`{C.MODEL_NAME}` AND t.`{C.MODEL_VERSION}` = s.`{C.MODEL_VERSION}`)")
# The micro-batch path needs these to exist (batch ingest creates them); before that, the
# batch path's Spark update bootstraps them.
FAST_PATH_TABLES = (C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX)
GOLD_SCHEMA = (
    f"{C.USER_ID} string, {C.VARIANT} string, "
    f"{C.ITEMS} array<struct<{C.ITEM_ID}:string,{C.SCORE}:float,{C.RANK}:int>>, "
    f"{C.MODEL_NAME} string, {C.MODEL_VERSION} int, {C.SOURCE} string, {C.UPDATED_AT} timestamp"
)
# Run params that hold the champion's ALS hyperparameters (train logs best_<grid key>).
REG_PARAM_KEYS = ("best_reg_param", "reg_param", "regParam")
ALPHA_KEYS = ("best_alpha", "alpha")


# Up to this many events (a micro-batch's users' whole history) are turned into interactions
# in one Spark task: the window and the aggregation then need no shuffle, which is most of the
# cost of a small job (0.35-0.40 s against 0.53-0.71 s for 16,000 events).
SINGLE_TASK_ROWS = 500_000
# What the stream reads of a batch's users' bronze history: the dedup key and the interactions' input.
HISTORY_COLUMNS: tuple[str, ...] = (C.EVENT_ID, *C.INTERACTION_INPUTS)


def checkpoint_path(config: ClickrecConfig) -> str:
    """The query's own checkpoint, under the lake so it travels with the tables it protects."""
    return delta.table_path(config, f"_checkpoints/stream/{config.stream.query_name}")


def metrics_path(config: ClickrecConfig) -> str:
    """The JSON file the listener keeps the latest progress in (for monitoring)."""
    return delta.table_path(config, f"_metrics/stream/{config.stream.query_name}.json")


# --- the model the stream folds users into ------------------------------------------------------


@dataclass
class FoldInModel:
    """A registered version's item factors and the hyperparameters fold-in must match."""

    name: str
    version: int
    items: ItemFactors
    item_ids: dict[int, str]  # model item idx -> source item id
    reg_param: float
    alpha: float


def _param(params: dict[str, str], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in params:
            return float(params[key])
    return None


def load_fold_in_model(spark: SparkSession, config: ClickrecConfig, version: int) -> FoldInModel | None:
    """Load `version`'s item factors and its run's reg_param/alpha; None (logged) when unusable."""
    from pyspark.sql import functions as F

    from clickrec.ml.recommend import item_matrix

    ref = tracking.resolve_model_version(config, version=version)
    params = tracking.run_params(config, ref["run_id"]) if ref["run_id"] else {}
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
    model = tracking.load_model_version(config, version)
    ids, mat = item_matrix(model.itemFactors)
    index = delta.read_table(spark, delta.table_path(config, C.SILVER_ITEM_INDEX))
    known = index.where(F.col(C.IDX).isin([int(i) for i in ids])) if len(ids) < 50_000 else index
    item_ids = {int(r[C.IDX]): str(r[C.SOURCE_ID]) for r in known.select(C.IDX, C.SOURCE_ID).collect()}
    log.info("fold-in model %s v%d: %d items, rank %d, reg_param %s, alpha %s",
             ref["model_name"], version, len(ids), mat.shape[1] if mat.size else 0, reg_param, alpha)
    return FoldInModel(ref["model_name"], version, ItemFactors(ids, mat), item_ids, reg_param, alpha)


def served_version(config: ClickrecConfig) -> int | None:
    """The model version gold serves for stream.variant: the one publish last wrote there.

    The stream folds in with this version rather than the registry alias's, so that its lists
    come from the model the variant is published with: after a rollback (`publish --model-version
    V`, which leaves the aliases alone) it follows V, and a newly promoted champion is taken up
    once it is published. Publish writes gold/popular_items before gold/recommendations, and
    the stream never replaces a batch list of another version (STREAM_REPLACES), so a
    micro-batch that raced a publish leaves its lists to it.
    None when the variant is not published yet (or by another model name): the caller then
    uses the alias.
    """
    dt = open_table(config, C.GOLD_POPULAR_ITEMS)
    if dt is None:
        return None
    rows = dt.to_pyarrow_table(columns=[C.VARIANT, C.MODEL_NAME, C.MODEL_VERSION]).to_pylist()
    for row in rows:
        if row[C.VARIANT] == config.stream.variant and row[C.MODEL_NAME] == config.mlflow.model_name:
            return int(row[C.MODEL_VERSION])
    return None


def fold_in_lists(
    model: FoldInModel, interactions: Any, *, n: int, exclude: str, rating_col: str = C.RATING
) -> dict[str, list[tuple[str, float]]]:
    """{user_id: [(item_id, score), ...]} for users with a known item (pandas rows of silver)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for user_id, rows in interactions.groupby(C.USER_ID, sort=True):
        item_idx = rows[C.ITEM_IDX].to_numpy(dtype=np.int64)
        x = fold_in(model.items, item_idx, rows[rating_col].to_numpy(dtype=np.float64),
                    reg_param=model.reg_param, alpha=model.alpha)
        if x is None:
            continue
        drop = item_idx if exclude == "seen" else item_idx[rows[C.PURCHASES].to_numpy() > 0]
        ids, scores = top_n(model.items, x, n=n, exclude=drop)
        out[str(user_id)] = [(model.item_ids[int(i)], float(s)) for i, s in zip(ids, scores, strict=True)
                             if int(i) in model.item_ids]
    return out


# --- one micro-batch ---------------------------------------------------------------------------


@dataclass
class BatchProcessor:
    """The foreachBatch function: bronze, silver and gold for one micro-batch, idempotently."""

    spark: SparkSession
    config: ClickrecConfig
    model: FoldInModel | None = None
    totals: dict[str, int] = field(default_factory=lambda: {
        "batches": 0, "rows_read": 0, "accepted": 0, "duplicates": 0, "quarantined": 0,
        "users_refreshed": 0, "model_reloads": 0})
    last_batch: dict[str, Any] = field(default_factory=dict)
    # the error that failed a batch: the query reports it only as text, and its exit code (6
    # for a lost commit race, 4 for a service, 1 for a bug) must reach the user
    error: Exception | None = field(default=None, repr=False)
    model_checked_version: int | None = None
    lease_view: leases.LeaseView = field(init=False, repr=False)  # asked before every silver and gold commit

    def __post_init__(self) -> None:
        self.lease_view = leases.LeaseView(self.config)

    def refresh_model(self) -> None:
        """Load the version gold serves (else the alias's) when it changed since the last batch."""
        version = served_version(self.config)
        if version is None:
            try:
                version = tracking.alias_versions(self.config).get(self.config.stream.variant)
            except Exception as exc:  # a registry blip must not end the query: keep the model it has
                log.warning("model registry unavailable, keeping model version %s: %s", self.model_checked_version, exc)
                return
        if version is None or version == self.model_checked_version:
            return
        try:
            model = load_fold_in_model(self.spark, self.config, version)
        except ServiceError as exc:
            # The registry is unreachable: try again next batch. Meanwhile fold in only with the
            # version gold serves, never with another one (lists of two models would mix).
            if self.model is not None and self.model.version != version:
                self.model = None
            log.warning("model registry unavailable, cannot load version %s yet (fold-in %s): %s",
                        version, "keeps it" if self.model else "is off until it loads", exc)
            return
        except NotFoundError as exc:  # the version is gone from the registry: not worth retrying
            log.error("model version %s cannot be found, fold-in is off until another is served: %s", version, exc)
            model = None
        self.model_checked_version = version
        self.model = model
        self.totals["model_reloads"] += 1

    def __call__(self, staged: DataFrame, batch_id: int) -> None:
        """One micro-batch of `staged_events` rows (parsed, flagged and hashed by the query)."""
        try:
            self._process(staged, batch_id)
        except Exception as exc:
            self.error = exc
            raise

    def _process(self, staged: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        self.refresh_model()
        config = self.config
        run_id = f"stream-{config.stream.query_name}-{batch_id}"
        now = datetime.now(UTC).replace(tzinfo=None)
        tables = {t: open_table(config, t) for t in FAST_PATH_TABLES}
        if all(dt is not None for dt in tables.values()):
            info = self._small_batch(staged, batch_id, run_id, now, tables)
        else:
            info = self._first_batch(staged, batch_id, run_id, now)
        self.last_batch = {"batch_id": batch_id, **info, "model_version": self.model.version if self.model else None,
                           "seconds": round(time.monotonic() - started, 3)}
        for key in ("rows_read", "accepted", "duplicates", "quarantined", "users_refreshed"):
            self.totals[key] += int(self.last_batch[key])
        self.totals["batches"] += 1
        log.info("batch %d: %s", batch_id, self.last_batch)

    def _small_batch(self, staged: DataFrame, batch_id: int, run_id: str, now: datetime,
                     tables: dict[str, Any]) -> dict[str, Any]:
        """The micro-batch path: two Spark jobs on the batch's rows, delta-rs reads and commits."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from clickrec.ingest import BRONZE_COLUMNS, SILVER_COLUMNS, quarantine_rejected

        config, spark = self.config, self.spark
        timings: dict[str, float] = {}
        clock = time.monotonic()
        batch = staged.toArrow()  # Kafka read, parse, validate, hash: one job
        rows = batch.num_rows
        flagged = pc.greater(pc.list_value_length(batch.column(C.REASONS)), 0)
        rejected = int(pc.sum(flagged).as_py() or 0)
        if rejected:  # rare: Spark's shared quarantine writer; a replayed offset is already held
            quarantine_rejected(spark, config, staged, fmt="rees46", input_key=f"stream-{config.stream.query_name}",
                                run_id=run_id, now=now, txn_version=None, skip_held=True)
        data_columns = [c for c in BRONZE_COLUMNS if c not in (C.INGEST_RUN_ID, C.INGESTED_AT)]
        valid = batch.filter(pc.invert(flagged)).select(data_columns)
        timings["stage_s"] = time.monotonic() - clock
        info: dict[str, Any] = {"rows_read": rows, "accepted": 0, "duplicates": 0, "quarantined": rejected,
                                "users": 0, "users_refreshed": 0}
        if valid.num_rows == 0:
            return {**info, **_rounded(timings)}

        # bronze: the batch's users' history; append only event_ids it does not hold (a replayed
        # batch finds its own events there, and its commit carries (query, batch id) too)
        clock = time.monotonic()
        users = sorted(set(valid.column(C.USER_ID).to_pylist()))
        bronze_dt = tables[C.BRONZE_EVENTS]
        # only the columns dedup and the interactions need: a scan of bronze decodes what it reads
        history = delta_rs.read_where_in(bronze_dt, C.USER_ID, users, HISTORY_COLUMNS)
        new_events = _first_unseen(valid, C.EVENT_ID, set(history.column(C.EVENT_ID).to_pylist()))
        new_events = new_events.append_column(C.INGEST_RUN_ID, pa.array([run_id] * new_events.num_rows, pa.string()))
        new_events = new_events.append_column(C.INGESTED_AT, pa.array([now] * new_events.num_rows, pa.timestamp("us")))
        new_events = delta_rs.conform(new_events, bronze_dt)
        app_id = f"clickrec-stream-{config.stream.query_name}"
        # bronze as `history` + `new_events` describe it: the version read, plus this batch's append
        bronze_seen = bronze_dt.version() + (1 if new_events.num_rows else 0)
        if new_events.num_rows and not delta_rs.append_once(config, bronze_dt, new_events, app_id=app_id,
                                                            version=batch_id):
            # bronze records this batch id but not these events: the checkpoint was reset and
            # batch ids restarted; the event_ids decide, so nothing is lost or doubled
            log.warning("bronze already records %s batch %d, but %d of its events are new (checkpoint reset?): "
                        "appending them", app_id, batch_id, new_events.num_rows)
            delta_rs.append(config, bronze_dt, new_events)
        info.update(accepted=new_events.num_rows, duplicates=valid.num_rows - new_events.num_rows, users=len(users))
        timings["bronze_s"] = time.monotonic() - clock

        # silver: the users' interactions recomputed from all their events, with the batch
        # path's own transform (dwell needs the user's earlier events; later ones recompute)
        clock = time.monotonic()
        def update_silver(_attempt: int) -> tuple[Any, Any]:
            # A batch ingest holds a lease on silver while it writes it: wait for it. Silver is
            # opened before bronze is checked, so an ingest commit after the check fails this
            # MERGE (and the attempt is redone); events another writer added to bronze since
            # `history` was read are read again.
            self.lease_view.wait_until_free((C.SILVER_INTERACTIONS,))
            silver_dt, bronze_now = tables[C.SILVER_INTERACTIONS], tables[C.BRONZE_EVENTS]
            silver_dt.update_incremental()  # the commits since the batch opened them, not a fresh open
            bronze_now.update_incremental()
            events = pa.concat_tables([history, new_events.select(list(HISTORY_COLUMNS))])
            if bronze_now.version() != bronze_seen:
                events = delta_rs.read_where_in(bronze_now, C.USER_ID, users, HISTORY_COLUMNS)
            interactions = self._interactions(events)
            user_ids = self._ids(tables[C.SILVER_USER_INDEX], interactions.column(C.USER_ID).to_pylist())
            item_ids = self._ids(tables[C.SILVER_ITEM_INDEX], interactions.column(C.ITEM_ID).to_pylist())
            rows = interactions.append_column(
                C.USER_IDX, pa.array([user_ids[u] for u in interactions.column(C.USER_ID).to_pylist()], pa.int32())
            ).append_column(
                C.ITEM_IDX, pa.array([item_ids[i] for i in interactions.column(C.ITEM_ID).to_pylist()], pa.int32())
            )
            rows = delta_rs.conform(rows.select(list(SILVER_COLUMNS)), silver_dt)
            changes = _changed(rows, delta_rs.read_where_in(silver_dt, C.USER_ID, users, SILVER_COLUMNS))
            if changes.num_rows:
                delta_rs.merge_upsert(silver_dt, changes, keys=C.INTERACTION_KEYS)
            return rows, changes

        silver_rows, changed = conflicts.retry_on_conflict(update_silver, what=C.SILVER_INTERACTIONS)
        info["interactions_changed"] = changed.num_rows
        timings["silver_s"] = time.monotonic() - clock

        clock = time.monotonic()
        if self.model is not None:
            info["users_refreshed"] = self._refresh_gold(silver_rows.to_pandas(), now)
        timings["gold_s"] = time.monotonic() - clock
        return {**info, **_rounded(timings)}

    def _interactions(self, events: Any) -> Any:
        """events_to_interactions over a few users' events (arrow in, arrow out: one local job)."""
        from clickrec.transforms.clickstream import events_to_interactions

        ic = self.config.ingest
        df = self.spark.createDataFrame(events)
        if events.num_rows <= SINGLE_TASK_ROWS:  # one task, no shuffle: a third faster on a batch
            df = df.coalesce(1)
        return df.transform(
            events_to_interactions, cap_seconds=ic.dwell_cap_seconds,
            last_view_seconds=ic.last_view_dwell_seconds, rating=ic.rating.model_dump(),
        ).toArrow()

    def _ids(self, index_dt: Any, keys: list[str]) -> dict[str, int]:
        """The index ids of `keys`; keys it lacks are given ids first (assign_new_ids' rule).

        A batch ingest may number new keys at the same time: new ids go in with a MERGE that
        skips taken keys and ids and fails on a concurrent commit, and whatever did not get in
        is numbered again from the table's newer version (see ingest._extend_index).
        """
        import pyarrow as pa
        from deltalake.exceptions import CommitFailedError

        from clickrec.transforms.index import number_new_keys

        wanted = sorted(set(keys))
        for attempt in range(1, conflicts.ATTEMPTS + 1):
            known = delta_rs.read_where_in(index_dt, C.SOURCE_ID, wanted, (C.SOURCE_ID, C.IDX))
            ids = dict(zip(known.column(C.SOURCE_ID).to_pylist(), known.column(C.IDX).to_pylist(), strict=True))
            if len(ids) == len(wanted):
                return ids
            top = delta_rs.max_value(index_dt, C.IDX)
            fresh = number_new_keys(wanted, ids, top)
            try:  # ids are dense: only rows committed since this read (ids above top) can collide
                inserted = delta_rs.insert_unless_taken(index_dt, pa.table({
                    C.SOURCE_ID: pa.array([k for k, _ in fresh], pa.string()),
                    C.IDX: pa.array([i for _, i in fresh], pa.int32())}), unique=(C.SOURCE_ID, C.IDX),
                    target_filter=f"t.`{C.IDX}` > {-1 if top is None else int(top)}")
            except CommitFailedError as exc:
                log.warning("new ids: a concurrent writer committed first (attempt %d): %s", attempt, exc)
                inserted = -1
            if inserted == len(fresh):
                ids.update(fresh)
                return ids
            index_dt.update_incremental()  # see the ids the other writer committed
        raise ConcurrentWriteError(f"{index_dt.table_uri}: new ids kept colliding with a concurrent writer's")

    def _first_batch(self, staged: DataFrame, batch_id: int, run_id: str, now: datetime) -> dict[str, Any]:
        """Before batch ingest has created the tables: the batch path's Spark incremental update."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        from clickrec.ingest import _count_batch, ingest_valid_events, quarantine_rejected

        config, spark = self.config, self.spark
        staged = staged.persist(StorageLevel.MEMORY_AND_DISK)
        staging = delta.table_path(config, f"_staging/{run_id}")
        try:
            rows, rejected, _ = _count_batch(staged)
            if rejected:
                quarantine_rejected(spark, config, staged, fmt="rees46", input_key=f"stream-{config.stream.query_name}",
                                    run_id=run_id, now=now, txn_version=None, skip_held=True)
            valid = staged.where(F.size(C.REASONS) == 0)
            counts = ingest_valid_events(spark, config, valid, rows - rejected, run_id, now, staging)
            users = [r[C.USER_ID] for r in valid.select(C.USER_ID).distinct().collect()]
            refreshed = 0
            if users and self.model is not None:
                silver = delta.read_table(spark, delta.table_path(config, C.SILVER_INTERACTIONS))
                wanted = spark.createDataFrame([(u,) for u in users], f"{C.USER_ID} string")
                rows_pdf = (silver.join(F.broadcast(wanted), C.USER_ID, "left_semi")
                            .select(C.USER_ID, C.ITEM_IDX, config.train.rating_col, C.PURCHASES).toPandas())
                refreshed = self._refresh_gold(rows_pdf, now)
        finally:
            staged.unpersist()
            delete_path(spark, staging)
        return {"rows_read": rows, "accepted": counts.get("accepted", 0), "duplicates": counts.get("duplicates", 0),
                "quarantined": rejected, "users": len(users), "users_refreshed": refreshed}

    def _refresh_gold(self, interactions: Any, now: datetime) -> int:
        """Fold the users of `interactions` (pandas silver rows) in and upsert their lists into gold.

        When a publish switched the variant to another version after this batch loaded its
        model, that version is loaded and the users are folded in again: lists of two models
        must not mix in the variant, and these users' new clicks must still reach gold.
        """
        config = self.config
        pdf = interactions.assign(**{C.RATING: interactions[config.train.rating_col]})
        path = delta.table_path(config, C.GOLD_RECOMMENDATIONS)
        for _switch in range(3):
            model = self.model
            if model is None:
                return 0
            lists = fold_in_lists(model, pdf, n=config.publish.n, exclude=config.publish.exclude)
            if not lists:
                return 0
            rows = [
                (user, config.stream.variant,
                 [(item, score, rank) for rank, (item, score) in enumerate(items, start=1)],
                 model.name, model.version, C.SOURCE_STREAM, now)
                for user, items in sorted(lists.items())
            ]

            def write(_attempt: int, model: FoldInModel = model, rows: list[tuple[Any, ...]] = rows) -> int | None:
                # publish may MERGE into gold at the same time: redone from a fresh read
                self.lease_view.wait_until_free((C.GOLD_RECOMMENDATIONS,))  # publish holds one while it writes
                served = served_version(config)
                if served is not None and served != model.version:
                    return None  # switched since this batch loaded its model
                gold_dt = open_table(config, C.GOLD_RECOMMENDATIONS)
                if gold_dt is None:  # created by Spark, partitioned by variant like publish's
                    delta.merge_upsert(self.spark, self.spark.createDataFrame(rows, GOLD_SCHEMA), path,
                                       keys=C.RECOMMENDATION_KEYS, partition_by=(C.VARIANT,))
                    return len(rows)
                # only lists that differ from what gold holds: a replayed batch commits nothing and
                # `updated_at` keeps meaning "when this list last changed"
                held = delta_rs.read_where_in(gold_dt, C.USER_ID, [r[0] for r in rows], GOLD_COMPARED)
                changed = _changed_lists(rows, held.to_pylist())
                if changed:
                    delta_rs.merge_upsert(gold_dt, _gold_arrow(changed), keys=C.RECOMMENDATION_KEYS,
                                          update_when=STREAM_REPLACES,
                                          target_filter=f"t.`{C.VARIANT}` = '{config.stream.variant}'")
                return len(changed)

            written = conflicts.retry_on_conflict(write, what=C.GOLD_RECOMMENDATIONS)
            if written is not None:
                return written
            log.info("gold switched from version %d during the batch: folding its users in again", model.version)
            self.refresh_model()
        return 0


GOLD_COMPARED = (C.USER_ID, C.VARIANT, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE)


def _list_key(items: Any) -> tuple[tuple[Any, float, int], ...]:
    """A list's (item, score as stored in float32, rank) triples, comparable across both sides."""
    return tuple((str(i), float(np.float32(s)), int(r)) for i, s, r in items)


def _changed_lists(rows: list[tuple[Any, ...]], held: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """GOLD_SCHEMA `rows` whose list, model or source differ from gold's row of that (user, variant)."""
    current = {
        (h[C.USER_ID], h[C.VARIANT]): (
            _list_key((i[C.ITEM_ID], i[C.SCORE], i[C.RANK]) for i in h[C.ITEMS] or []),
            h[C.MODEL_NAME], h[C.MODEL_VERSION], h[C.SOURCE],
        )
        for h in held
    }
    return [r for r in rows if current.get((r[0], r[1])) != (_list_key(r[2]), r[3], r[4], r[5])]


def _gold_arrow(rows: list[tuple[Any, ...]]) -> Any:
    """gold/recommendations rows (GOLD_SCHEMA tuples) as an arrow table."""
    import pyarrow as pa

    item = pa.struct([(C.ITEM_ID, pa.string()), (C.SCORE, pa.float32()), (C.RANK, pa.int32())])
    schema = pa.schema([(C.USER_ID, pa.string()), (C.VARIANT, pa.string()), (C.ITEMS, pa.list_(item)),
                        (C.MODEL_NAME, pa.string()), (C.MODEL_VERSION, pa.int32()), (C.SOURCE, pa.string()),
                        (C.UPDATED_AT, pa.timestamp("us"))])
    columns = list(zip(*rows, strict=True))
    items = [[{C.ITEM_ID: i, C.SCORE: s, C.RANK: r} for i, s, r in lst] for lst in columns[2]]
    return pa.table([list(columns[0]), list(columns[1]), items, *[list(c) for c in columns[3:]]], schema=schema)


def _first_unseen(table: Any, key: str, seen: set[str]) -> Any:
    """The first row of each `key` value of `table` that is not in `seen`, in table order."""
    import pyarrow as pa

    keep, taken = [], set(seen)
    for n, value in enumerate(table.column(key).to_pylist()):
        if value not in taken:
            taken.add(value)
            keep.append(n)
    return table.take(pa.array(keep, pa.int64()))


def _changed(rows: Any, current: Any) -> Any:
    """Rows of `rows` that `current` does not hold with exactly the same values (arrow tables).

    Both are silver rows in the table's types, unique on the interaction keys: joined on them,
    a row is unchanged when every other column is equal (two nulls count as equal).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if current.num_rows == 0 or rows.num_rows == 0:
        return rows
    keys = list(C.INTERACTION_KEYS)
    values = [c for c in rows.column_names if c not in keys]
    left = rows.select(keys + values).append_column("_n", pa.array(np.arange(rows.num_rows), pa.int64()))
    right = current.select(keys + values).rename_columns(keys + [f"_held_{c}" for c in values])
    pairs = left.join(right, keys=keys, join_type="inner")
    same = pa.array(np.ones(pairs.num_rows, dtype=bool))
    for c in values:
        a, b = pairs.column(c), pairs.column(f"_held_{c}")
        equal = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(pc.is_null(a), pc.is_null(b)))
        same = pc.and_(same, equal)
    unchanged = np.zeros(rows.num_rows, dtype=bool)
    unchanged[pc.filter(pairs.column("_n"), same).to_numpy()] = True
    return rows.filter(pa.array(~unchanged))


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in timings.items()}


def staged_events(kafka_df: DataFrame, config: ClickrecConfig) -> DataFrame:
    """Kafka records -> batch ingest's staged rows (stage_event_lines over the JSON values).

    Applied to the streaming DataFrame once, when the query starts, so that a micro-batch
    arrives parsed and flagged without rebuilding the plan (hundreds of py4j calls) each time.
    """
    from pyspark.sql import functions as F

    from clickrec.ingest import _suite_params, stage_event_lines
    from clickrec.quality import load_suite

    lines = kafka_df.select(
        F.col("value").cast("string").alias(C.VALUE),
        F.format_string("kafka://%s/%d/%d", F.col("topic"), F.col("partition"), F.col("offset")).alias(C.SOURCE_FILE),
    )
    suite = load_suite(config.ingest.events_suite, _suite_params(config))
    return stage_event_lines(lines, config, file_format="json", suite=suite)


# --- progress and lag --------------------------------------------------------------------------


def progress_record(progress: Any) -> dict[str, Any]:
    """The monitoring fields of a StreamingQueryProgress (rates, durations, offsets behind)."""
    data = json.loads(progress.json) if hasattr(progress, "json") else dict(progress)
    behind = {}
    for source in data.get("sources", []):
        metrics = source.get("metrics") or {}
        for key in ("avgOffsetsBehindLatest", "maxOffsetsBehindLatest", "minOffsetsBehindLatest"):
            if key in metrics:
                behind[key] = float(metrics[key])
    return {
        "batch_id": data.get("batchId"),
        "timestamp": data.get("timestamp"),
        "num_input_rows": data.get("numInputRows"),
        "input_rows_per_second": data.get("inputRowsPerSecond"),
        "processed_rows_per_second": data.get("processedRowsPerSecond"),
        "batch_duration_ms": data.get("batchDuration"),
        "trigger_execution_ms": (data.get("durationMs") or {}).get("triggerExecution"),
        "offsets_behind_latest": behind.get("maxOffsetsBehindLatest"),
        "avg_offsets_behind_latest": behind.get("avgOffsetsBehindLatest"),
        "end_offset": [s.get("endOffset") for s in data.get("sources", [])],
    }


def _listener_class() -> type:
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        """Logs each progress event and keeps the latest ones in a JSON file for monitoring."""

        def __init__(self, query_name: str, path: str) -> None:
            self.query_name, self.path = query_name, path
            self.history: list[dict[str, Any]] = []
            self.lock = threading.Lock()

        def onQueryStarted(self, event: Any) -> None:
            log.info("query %s started (id %s, run %s)", event.name, event.id, event.runId)

        def onQueryProgress(self, event: Any) -> None:
            if event.progress.name != self.query_name:
                return
            record = progress_record(event.progress)
            log.info("progress %s", json.dumps({k: v for k, v in record.items() if k != "end_offset"}))
            with self.lock:
                self.history = [*self.history[-99:], record]
                self._write()

        def onQueryIdle(self, event: Any) -> None:
            pass

        def onQueryTerminated(self, event: Any) -> None:
            log.info("query %s terminated%s", event.id, f": {event.exception}" if event.exception else "")

        def _write(self) -> None:
            if "://" in self.path:
                return  # object stores: the log and Spark's own metrics carry it
            target = Path(self.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            tmp.write_text(json.dumps({"query": self.query_name, "latest": self.history[-1],
                                       "history": self.history}, default=str))
            tmp.replace(target)

    return ProgressListener


# --- the query ---------------------------------------------------------------------------------


def run_stream(
    spark: SparkSession,
    config: ClickrecConfig,
    *,
    available_now: bool = False,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Run the refresh query until the topic is drained (available_now), max_seconds pass, or SIGTERM.

    Returns the summary: batches and rows processed, users refreshed, model version, paths and
    table versions. Raises ServiceError without Kafka; when the query fails, what
    `_query_failure` says (the batch's own error, or ServiceError for Spark and storage; the
    checkpoint keeps the last committed batch).
    """
    from pyspark.errors import StreamingQueryException

    from clickrec.io.kafka import ensure_topic, stream_source_options

    sc = config.stream
    if available_now and max_seconds is not None:
        raise InputError("--available-now and --max-seconds exclude each other")
    options = stream_source_options(
        config.kafka, topic=config.kafka.clickstream_topic, starting_offsets=sc.starting_offsets,
        max_offsets_per_trigger=sc.max_offsets_per_trigger, fail_on_data_loss=sc.fail_on_data_loss,
    )
    if ensure_topic(config.kafka, config.kafka.clickstream_topic):
        log.info("created topic %s", config.kafka.clickstream_topic)
    started = time.monotonic()
    processor = BatchProcessor(spark, config)
    try:
        processor.refresh_model()
    except NotFoundError:
        log.warning("no model holds alias %s: bronze and silver only until one does", sc.variant)
    listener = _listener_class()(sc.query_name, metrics_path(config))
    spark.streams.addListener(listener)
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    query = None
    try:
        writer = (
            staged_events(spark.readStream.format("kafka").options(**options).load(), config)
            .writeStream.queryName(sc.query_name)
            .option("checkpointLocation", checkpoint_path(config))
            .foreachBatch(processor)
        )
        writer = writer.trigger(availableNow=True) if available_now else writer.trigger(
            processingTime=f"{int(sc.trigger_seconds * 1000)} milliseconds")
        query = writer.start()
        log.info("stream %s from topic %s (checkpoint %s)", sc.query_name, config.kafka.clickstream_topic,
                 checkpoint_path(config))
        reason = "drained" if available_now else "stopped"
        while query.isActive:
            if query.awaitTermination(1):
                break
            if stop.is_set():
                reason = "sigterm"
                _stop_gracefully(query, sc.stop_timeout_seconds)
            elif max_seconds is not None and time.monotonic() - started >= max_seconds:
                reason = "max_seconds"
                _stop_gracefully(query, sc.stop_timeout_seconds)
        error = query.exception()
        if error is not None:
            raise _query_failure(sc.query_name, processor, error)
    except StreamingQueryException as exc:
        raise _query_failure(sc.query_name, processor, exc) from exc
    finally:
        if query is not None and query.isActive:
            query.stop()
        spark.streams.removeListener(listener)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    model = processor.model
    return {
        "query": sc.query_name,
        "topic": config.kafka.clickstream_topic,
        "stop_reason": reason,
        **processor.totals,
        "model_version": model.version if model else None,
        "last_batch": processor.last_batch,
        "last_progress": listener.history[-1] if listener.history else None,
        "checkpoint": checkpoint_path(config),
        "metrics": metrics_path(config),
        "tables": {t: delta.table_version(spark, delta.table_path(config, t))
                   for t in (C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.GOLD_RECOMMENDATIONS)},
        "seconds": round(time.monotonic() - started, 1),
    }


def _query_failure(query_name: str, processor: BatchProcessor, error: Any) -> Exception:
    """The error a failed query ends the command with: the batch's own, as it was raised (a
    ClickrecError keeps its exit code, a bug stays a bug: exit 1 with its traceback), else a
    ServiceError (the query itself failed: Kafka, storage; bad rows never fail a batch)."""
    from deltalake.exceptions import DeltaError
    from py4j.protocol import Py4JError

    failed = processor.error
    if failed is None or isinstance(failed, (Py4JError, DeltaError, OSError)):  # Spark, storage
        return ServiceError(f"stream {query_name} failed: {first_line(failed or error)}")
    return failed


def _stop_gracefully(query: Any, timeout: float) -> None:
    """Let a running micro-batch finish (bounded), then stop; a cut batch would be redone anyway."""
    deadline = time.monotonic() + timeout
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()


# --- replay ------------------------------------------------------------------------------------


def _open_lines(path: Path) -> io.BufferedIOBase:
    """The file's bytes (gunzipped for *.gz), read line by line like batch ingest's text reader."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # type: ignore[return-value]


def event_payloads(path: Path, config: ClickrecConfig) -> Iterator[tuple[str | None, bytes]]:
    """(key, value bytes) per line of a CSV or JSON-lines clickstream file, in file order.

    A CSV row becomes an object of the source columns with their text values (what batch
    ingest reads, so both paths hash the same event_id); JSON lines are sent as they are. A
    line batch ingest would quarantine for its shape (not UTF-8, too few or too many fields) is
    sent as its raw bytes, which the stream quarantines too, raw line kept: the same file gives
    the same tables by either path. The key is the user id, so one user's events stay in one
    partition, in order.
    """
    ic = config.ingest
    name = path.name.lower().removesuffix(".gz")
    is_json = ic.file_format == "json" or (ic.file_format == "auto" and name.endswith((".json", ".jsonl", ".ndjson")))
    user_col = ic.column_mapping.get(C.USER_ID, C.USER_ID)
    header = list(ic.source_columns)
    with _open_lines(path) as handle:
        for raw_line in handle:
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield None, raw
                continue
            if is_json:
                try:
                    key = json.loads(line).get(user_col)
                except (json.JSONDecodeError, AttributeError):
                    key = None
                yield (None if key is None else str(key)), raw
                continue
            fields = next(csv.reader([line], delimiter=ic.delimiter), [])
            if ic.header and fields == header:
                continue
            if len(fields) != len(header):
                yield None, raw
                continue
            event = dict(zip(header, fields, strict=True))
            yield event.get(user_col), json.dumps(event, separators=(",", ":")).encode("utf-8")


def replay(config: ClickrecConfig, *, input_path: str, rate: float | None = None, topic: str | None = None) -> dict[str, Any]:
    """Send a clickstream file to Kafka at `rate` events/s with progress on stderr; the summary."""
    from clickrec.io.kafka import send_events

    path = Path(input_path)
    if not path.is_file():
        raise InputError(f"--input {input_path}: no such file (replay sends one CSV or JSON-lines file)")
    rate = config.stream.replay_rate if rate is None else rate
    if rate < 0:
        raise InputError(f"--rate {rate}: must be >= 0 (0 sends as fast as the broker acknowledges)")
    topic = topic or config.kafka.clickstream_topic

    def progress(sent: int, seconds: float) -> None:
        print(f"replay: {sent} events in {seconds:.1f}s ({sent / seconds if seconds else 0:.0f}/s)",
              file=sys.stderr, flush=True)

    result = send_events(config.kafka, topic, event_payloads(path, config), rate=rate, on_progress=progress)
    return {"input": input_path, "topic": topic, "rate": rate, **result}
