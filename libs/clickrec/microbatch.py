"""One micro-batch of `clickrec stream`: bronze, silver and gold for a batch of Kafka events.

`BatchProcessor` is the query's foreachBatch function, safe to run twice. Once batch ingest
has created bronze, silver and the indexes, a batch takes the delta-rs path
(`process_with_delta_rs`): it costs two Spark jobs and commits with delta-rs
(clickrec.io.delta_rs: tens of milliseconds where a Spark Delta commit costs a second or two of
fixed work), in four named steps:

1. `stage`: collect the rows `clickrec.stream.staged_events` parsed, validated and hashed with
   batch ingest's own function (Spark job 1); rejected rows go to bronze/quarantine
   (clickrec.staging.quarantine_rejected, rows it already holds skipped);
2. `bronze`: read the batch's users' bronze history and insert only the event_ids it does not
   hold, with an insert-only MERGE on event_id over the batch's event dates: a writer that
   committed the same events meanwhile (an ingest, another stream) fails the MERGE, and the
   redo inserts what is still missing, so each event is in bronze once;
3. `silver`: recompute those users' silver/interactions from all their events with the batch
   path's transform (clickrec.transforms.clickstream.events_to_interactions, Spark job 2 on
   local rows), so dwell that needed an event of a later batch is fixed when that batch comes;
   new ids go into the index tables by assign_new_ids' rule, with a MERGE that a concurrent
   batch ingest's ids cannot slip past (`index_ids`); only rows whose values changed are
   MERGEd, and a MERGE that lost a commit race is redone from a fresh read;
4. `gold`: fold each affected user in against the model's item factors
   (clickrec.ml.foldin_model), rescore their top-N without the bought (or seen) items, and
   MERGE the lists into gold/recommendations keyed by (user_id, variant) with source `stream`
   (or the popular list, source `popular`, for a user with fewer than
   publish.min_user_interactions interactions: clickrec.ml.confidence, as publish applies it).
   A user with no interaction on an item the model knows gets no row, so readers keep serving
   them the popular list.

A batch cut anywhere is replayed with the same offsets: its events are found in bronze, silver
is recomputed to the same values (no commit when nothing changed) and gold is upserted again.
Until batch ingest has created the tables, a batch takes the Spark bootstrap path
(`bootstrap_with_spark`): batch ingest's own Spark update (clickrec.ingest.ingest_valid_events),
which creates them.

Before each batch the processor looks up the model version gold serves the variant with
(`refresh_model`, clickrec.ml.foldin_model.served_version): a new champion, once publish has
written it, is loaded before the next batch, and a rollback to an older version is followed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import IdsKeptCollidingError, NotFoundError, ServiceError
from clickrec.ingest import ingest_valid_events
from clickrec.io import conflicts, delta, delta_rs, leases
from clickrec.io.files import delete_path
from clickrec.io.lake import Lake
from clickrec.ml.foldin_model import FoldInModel, fold_in_lists, load_fold_in_model, served_version
from clickrec.staging import count_batch, quarantine_rejected
from clickrec.tracking import Tracking

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


# The stream replaces a gold list it wrote itself, or one computed with the same model; a
# batch list of another model version (publish just switched models) is left to publish.
STREAM_REPLACES = (f"t.`{C.SOURCE}` = '{C.SOURCE_STREAM}' OR "
                   f"(t.`{C.MODEL_NAME}` = s.`{C.MODEL_NAME}` AND t.`{C.MODEL_VERSION}` = s.`{C.MODEL_VERSION}`)")
# The delta-rs path needs these to exist (batch ingest creates them); before that, the
# Spark bootstrap path (batch ingest's own update) creates them.
DELTA_RS_PATH_TABLES = (C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX)
GOLD_SCHEMA = (
    f"{C.USER_ID} string, {C.VARIANT} string, "
    f"{C.ITEMS} array<struct<{C.ITEM_ID}:string,{C.SCORE}:float,{C.RANK}:int>>, "
    f"{C.MODEL_NAME} string, {C.MODEL_VERSION} int, {C.SOURCE} string, {C.UPDATED_AT} timestamp"
)
# What the gold step compares with the lists gold holds (a list, model or source that differs).
GOLD_COMPARED = (C.USER_ID, C.VARIANT, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE)
# Up to this many events (a micro-batch's users' whole history) are turned into interactions
# in one Spark task: the window and the aggregation then need no shuffle, which is most of the
# cost of a small job (docs/benchmarks.md, stream).
SINGLE_TASK_ROWS = 500_000
# What the stream reads of a batch's users' bronze history: the dedup key and the interactions' input.
HISTORY_COLUMNS: tuple[str, ...] = (C.EVENT_ID, *C.INTERACTION_INPUTS)


@dataclass(frozen=True)
class StagedBatch:
    """The `stage` step's result: the batch's row counts and its accepted rows on the driver."""

    rows: int
    rejected: int
    valid: Any  # arrow table of bronze's event columns (C.BRONZE_EVENT_COLUMNS)


@dataclass(frozen=True)
class BronzeAppend:
    """The `bronze` step's result: what silver recomputes the batch's users from."""

    users: list[str]  # the batch's users, sorted
    history: Any  # arrow: their events bronze held before the insert (HISTORY_COLUMNS)
    appended: Any  # arrow: the events this batch meant to insert (bronze's columns and types)
    inserted: int  # how many of them it inserted (fewer when a concurrent writer had some)
    version: int | None  # bronze's version that `history` + `appended` describe; None: read again


@dataclass
class BatchProcessor:
    """The foreachBatch function: bronze, silver and gold for one micro-batch, idempotently."""

    spark: SparkSession
    config: ClickrecConfig
    tracking: Tracking = None  # type: ignore[assignment]  # None: __post_init__ builds it from config.mlflow
    model: FoldInModel | None = None
    totals: dict[str, int] = field(default_factory=lambda: {
        "batches": 0, "rows_read": 0, "accepted": 0, "duplicates": 0, "quarantined": 0,
        "users_refreshed": 0, "model_reloads": 0})
    last_batch: dict[str, Any] = field(default_factory=dict)
    # the error that failed a batch: the query reports it only as text, and its exit code (6
    # for a lost commit race, 4 for a service, 1 for a bug) must reach the user
    error: Exception | None = field(default=None, repr=False)
    model_checked_version: int | None = None
    lake: Lake = field(init=False, repr=False)
    lease_view: leases.LeaseView = field(init=False, repr=False)  # asked before every bronze, silver and gold commit
    # set by the stream's SIGTERM: a wait for a lease then ends at once (LeaseWaitStopped)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        self.tracking = self.tracking or Tracking(self.config.mlflow, stream=True)
        self.lake = Lake.from_config(self.config)
        self.lease_view = leases.LeaseView(self.lake)

    def refresh_model(self) -> None:
        """Load the version gold serves (else the alias's) when it changed since the last batch."""
        version = served_version(self.config, self.lake)
        if version is None:
            try:
                version = self.tracking.alias_versions().get(self.config.stream.variant)
            except Exception as exc:  # a registry blip must not end the query: keep the model it has
                log.warning("model registry unavailable, keeping model version %s: %s", self.model_checked_version, exc)
                return
        if version is None or version == self.model_checked_version:
            return
        try:
            model = load_fold_in_model(self.spark, self.config, self.lake, self.tracking, version)
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
        tables = {t: self.lake.open(t) for t in DELTA_RS_PATH_TABLES}
        if all(dt is not None for dt in tables.values()):
            info = self.process_with_delta_rs(staged, run_id, now, tables)
        else:
            info = self.bootstrap_with_spark(staged, run_id, now)
        self.last_batch = {"batch_id": batch_id, **info, "model_version": self.model.version if self.model else None,
                           "seconds": round(time.monotonic() - started, 3)}
        for key in ("rows_read", "accepted", "duplicates", "quarantined", "users_refreshed"):
            self.totals[key] += int(self.last_batch[key])
        self.totals["batches"] += 1
        log.info("batch %d: %s", batch_id, self.last_batch)

    # --- the delta-rs path: stage, bronze, silver, gold -----------------------------------------

    def process_with_delta_rs(self, staged: DataFrame, run_id: str, now: datetime,
                              tables: dict[str, Any]) -> dict[str, Any]:
        """The micro-batch path once the tables exist: two Spark jobs, delta-rs reads and commits.

        Returns the batch's counts and the seconds of each step (`<step>_s`).
        """
        timings: dict[str, float] = {}
        clock = time.monotonic()
        batch = self.stage(staged, run_id, now)
        timings["stage_s"] = time.monotonic() - clock
        info: dict[str, Any] = {"rows_read": batch.rows, "accepted": 0, "duplicates": 0,
                                "quarantined": batch.rejected, "users": 0, "users_refreshed": 0}
        if batch.valid.num_rows == 0:
            return {**info, **_rounded(timings)}

        clock = time.monotonic()
        bronze = self.bronze(batch.valid, run_id, now, tables[C.BRONZE_EVENTS])
        info.update(accepted=bronze.inserted, duplicates=batch.valid.num_rows - bronze.inserted,
                    users=len(bronze.users))
        timings["bronze_s"] = time.monotonic() - clock

        clock = time.monotonic()
        silver_rows, changed = self.silver(bronze, tables)
        info["interactions_changed"] = changed.num_rows
        timings["silver_s"] = time.monotonic() - clock

        clock = time.monotonic()
        if self.model is not None:
            info["users_refreshed"] = self.gold(silver_rows.to_pandas(), now)
        timings["gold_s"] = time.monotonic() - clock
        return {**info, **_rounded(timings)}

    def stage(self, staged: DataFrame, run_id: str, now: datetime) -> StagedBatch:
        """Collect the staged rows (Kafka read, parse, validate, hash: one Spark job); quarantine
        the rejected ones (rare: Spark's shared quarantine writer; a replayed offset is already held)."""
        import pyarrow.compute as pc

        config = self.config
        batch = staged.toArrow()
        flagged = pc.greater(pc.list_value_length(batch.column(C.REASONS)), 0)
        rejected = int(pc.sum(flagged).as_py() or 0)
        if rejected:
            quarantine_rejected(self.spark, self.lake, staged, fmt="rees46", input_key=f"stream-{config.stream.query_name}",
                                run_id=run_id, now=now, txn_version=None, skip_held=True)
        valid = batch.filter(pc.invert(flagged)).select(list(C.BRONZE_EVENT_COLUMNS))
        return StagedBatch(rows=batch.num_rows, rejected=rejected, valid=valid)

    def wait_for_leases(self, tables: tuple[str, ...]) -> None:
        """Wait while a batch job holds a lease on one of `tables` (stream.lease_wait_seconds at most)."""
        self.lease_view.wait_until_free(tables, timeout=self.config.stream.lease_wait_seconds, stop=self.stop)

    def bronze(self, valid: Any, run_id: str, now: datetime, bronze_dt: Any) -> BronzeAppend:
        """Insert the events of `valid` whose event_id bronze does not hold, in one commit.

        Reads the batch's users' history from bronze (a replayed batch finds its own events
        there). The insert is a MERGE on event_id, not a blind append: a concurrent commit of
        the same dates fails it and it is redone, skipping the events committed meanwhile.
        """
        import pyarrow as pa

        self.wait_for_leases((C.BRONZE_EVENTS,))  # an ingest holds bronze while it MERGEs into it
        bronze_dt.update_incremental()
        users = sorted(set(valid.column(C.USER_ID).to_pylist()))
        # only the columns dedup and the interactions need: a scan of bronze decodes what it reads
        history = delta_rs.read_where_in(bronze_dt, C.USER_ID, users, HISTORY_COLUMNS)
        new_events = first_unseen(valid, C.EVENT_ID, set(history.column(C.EVENT_ID).to_pylist()))
        new_events = new_events.append_column(C.INGEST_RUN_ID, pa.array([run_id] * new_events.num_rows, pa.string()))
        new_events = new_events.append_column(C.INGESTED_AT, pa.array([now] * new_events.num_rows, pa.timestamp("us")))
        new_events = delta_rs.conform(new_events, bronze_dt)
        read_version = bronze_dt.version()
        if not new_events.num_rows:  # a replayed batch: everything is there already
            return BronzeAppend(users=users, history=history, appended=new_events, inserted=0, version=read_version)
        same_dates = delta.in_dates(C.EVENT_DATE, new_events.column(C.EVENT_DATE).to_pylist(), alias="t")

        def insert(attempt: int) -> int:
            if attempt > 1:
                bronze_dt.update_incremental()
            return delta_rs.insert_unless_taken(bronze_dt, new_events, unique=(C.EVENT_ID,), target_filter=same_dates)

        inserted = conflicts.retry_on_conflict(insert, what=C.BRONZE_EVENTS)
        # `history` + `new_events` describe bronze only if this MERGE, inserting them all, was
        # the one commit since the read; otherwise silver reads the users' events again.
        alone = inserted == new_events.num_rows and bronze_dt.version() == read_version + 1
        return BronzeAppend(users=users, history=history, appended=new_events, inserted=inserted,
                            version=read_version + 1 if alone else None)

    def silver(self, bronze: BronzeAppend, tables: dict[str, Any]) -> tuple[Any, Any]:
        """Recompute the users' interactions from all their events and MERGE the changed rows.

        Uses the batch path's own transform (dwell needs the user's earlier events; later ones
        recompute). Returns (the users' silver rows, the rows that changed), arrow tables; a
        MERGE that lost a commit race is redone.
        """
        return conflicts.retry_on_conflict(lambda _attempt: self._silver_attempt(bronze, tables),
                                           what=C.SILVER_INTERACTIONS)

    def _silver_attempt(self, bronze: BronzeAppend, tables: dict[str, Any]) -> tuple[Any, Any]:
        """One attempt of `silver`."""
        import pyarrow as pa

        # A batch ingest holds a lease on silver while it writes it: wait for it. Silver is
        # opened before bronze is checked, so an ingest commit after the check fails this
        # MERGE (and the attempt is redone); events another writer added to bronze since
        # `history` was read are read again.
        self.wait_for_leases((C.SILVER_INTERACTIONS,))
        silver_dt, bronze_now = tables[C.SILVER_INTERACTIONS], tables[C.BRONZE_EVENTS]
        silver_dt.update_incremental()  # the commits since the batch opened them, not a fresh open
        bronze_now.update_incremental()
        users = bronze.users
        events = pa.concat_tables([bronze.history, bronze.appended.select(list(HISTORY_COLUMNS))])
        if bronze_now.version() != bronze.version:
            events = delta_rs.read_where_in(bronze_now, C.USER_ID, users, HISTORY_COLUMNS)
        interactions = self._interactions(events)
        user_ids = self.index_ids(tables[C.SILVER_USER_INDEX], interactions.column(C.USER_ID).to_pylist())
        item_ids = self.index_ids(tables[C.SILVER_ITEM_INDEX], interactions.column(C.ITEM_ID).to_pylist())
        rows = interactions.append_column(
            C.USER_IDX, pa.array([user_ids[u] for u in interactions.column(C.USER_ID).to_pylist()], pa.int32())
        ).append_column(
            C.ITEM_IDX, pa.array([item_ids[i] for i in interactions.column(C.ITEM_ID).to_pylist()], pa.int32())
        )
        rows = delta_rs.conform(rows.select(list(C.SILVER_COLUMNS)), silver_dt)
        changes = changed_rows(rows, delta_rs.read_where_in(silver_dt, C.USER_ID, users, C.SILVER_COLUMNS))
        if changes.num_rows:
            delta_rs.merge_upsert(silver_dt, changes, keys=C.INTERACTION_KEYS)
        return rows, changes

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

    def index_ids(self, index_dt: Any, keys: list[str]) -> dict[str, int]:
        """The index ids of `keys`; keys it lacks are given ids first (assign_new_ids' rule).

        A batch ingest may number new keys at the same time: new ids go in with a MERGE that
        skips taken keys and ids and fails on a concurrent commit, and whatever did not get in
        is numbered again from the table's newer version (see clickrec.ingest.extend_index).
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
        raise IdsKeptCollidingError(index_dt.table_uri)

    # --- the Spark bootstrap path ------------------------------------------------------------------

    def bootstrap_with_spark(self, staged: DataFrame, run_id: str, now: datetime) -> dict[str, Any]:
        """Before batch ingest has created the tables: batch ingest's Spark update, which creates them."""
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        config, spark = self.config, self.spark
        staged = staged.persist(StorageLevel.MEMORY_AND_DISK)
        staging = self.lake.path(f"_staging/{run_id}")
        try:
            rows, rejected, _ = count_batch(staged)
            if rejected:
                quarantine_rejected(spark, self.lake, staged, fmt="rees46", input_key=f"stream-{config.stream.query_name}",
                                    run_id=run_id, now=now, txn_version=None, skip_held=True)
            valid = staged.where(F.size(C.REASONS) == 0)
            written = ingest_valid_events(spark, config, self.lake, valid, rows - rejected, run_id, now, staging)
            users = [r[C.USER_ID] for r in valid.select(C.USER_ID).distinct().collect()]
            refreshed = 0
            if users and self.model is not None:
                silver = self.lake.read(spark, C.SILVER_INTERACTIONS)
                wanted = spark.createDataFrame([(u,) for u in users], f"{C.USER_ID} string")
                rows_pdf = (silver.join(F.broadcast(wanted), C.USER_ID, "left_semi")
                            .select(C.USER_ID, C.ITEM_IDX, config.train.rating_col, C.PURCHASES).toPandas())
                refreshed = self.gold(rows_pdf, now)
        finally:
            staged.unpersist()
            delete_path(spark, staging)
        return {"rows_read": rows, "accepted": written.accepted, "duplicates": written.duplicates,
                "quarantined": rejected, "users": len(users), "users_refreshed": refreshed}

    # --- the gold step (both paths) ---------------------------------------------------------------

    def gold(self, interactions: Any, now: datetime) -> int:
        """Fold the users of `interactions` (pandas silver rows) in and upsert their lists into gold.

        When a publish switched the variant to another version after this batch loaded its
        model, that version is loaded and the users are folded in again: lists of two models
        must not mix in the variant, and these users' new clicks must still reach gold.
        """
        config = self.config
        pdf = interactions.assign(**{C.RATING: interactions[config.train.rating_col]})
        path = self.lake.path(C.GOLD_RECOMMENDATIONS)
        for _switch in range(3):
            model = self.model
            if model is None:
                return 0
            lists = fold_in_lists(model, pdf, n=config.publish.n, exclude=config.publish.exclude,
                                  min_interactions=config.publish.min_user_interactions)
            if not lists:
                return 0
            rows = [
                (user, config.stream.variant,
                 [(item, score, rank) for rank, (item, score) in enumerate(items, start=1)],
                 model.name, model.version, source, now)  # source: stream, or popular (confidence rule)
                for user, (items, source) in sorted(lists.items())
            ]

            def write(_attempt: int, model: FoldInModel = model, rows: list[tuple[Any, ...]] = rows) -> int | None:
                # publish may MERGE into gold at the same time: redone from a fresh read
                self.wait_for_leases((C.GOLD_RECOMMENDATIONS,))  # publish holds one while it writes
                served = served_version(config, self.lake)
                if served is not None and served != model.version:
                    return None  # switched since this batch loaded its model
                gold_dt = self.lake.open(C.GOLD_RECOMMENDATIONS)
                if gold_dt is None:  # created by Spark, like publish's: by variant, with a change feed
                    delta.merge_upsert(path, self.spark.createDataFrame(rows, GOLD_SCHEMA),
                                       keys=C.RECOMMENDATION_KEYS, partition_by=(C.VARIANT,),
                                       properties=C.TABLE_PROPERTIES[C.GOLD_RECOMMENDATIONS])
                    return len(rows)
                # only lists that differ from what gold holds: a replayed batch commits nothing and
                # `updated_at` keeps meaning "when this list last changed"
                held = delta_rs.read_where_in(gold_dt, C.USER_ID, [r[0] for r in rows], GOLD_COMPARED)
                changed = changed_lists(rows, held.to_pylist())
                if changed:
                    delta_rs.merge_upsert(gold_dt, gold_arrow(changed), keys=C.RECOMMENDATION_KEYS,
                                          update_when=STREAM_REPLACES,
                                          target_filter=f"t.`{C.VARIANT}` = '{config.stream.variant}'")
                return len(changed)

            written = conflicts.retry_on_conflict(write, what=C.GOLD_RECOMMENDATIONS)
            if written is not None:
                return written
            log.info("gold switched from version %d during the batch: folding its users in again", model.version)
            self.refresh_model()
        return 0


# --- pure arrow helpers of the steps ------------------------------------------------------------


def _list_key(items: Any) -> tuple[tuple[Any, float, int], ...]:
    """A list's (item, score as stored in float32, rank) triples, comparable across both sides."""
    return tuple((str(i), float(np.float32(s)), int(r)) for i, s, r in items)


def changed_lists(rows: list[tuple[Any, ...]], held: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """GOLD_SCHEMA `rows` whose list, model or source differ from gold's row of that (user, variant)."""
    current = {
        (h[C.USER_ID], h[C.VARIANT]): (
            _list_key((i[C.ITEM_ID], i[C.SCORE], i[C.RANK]) for i in h[C.ITEMS] or []),
            h[C.MODEL_NAME], h[C.MODEL_VERSION], h[C.SOURCE],
        )
        for h in held
    }
    return [r for r in rows if current.get((r[0], r[1])) != (_list_key(r[2]), r[3], r[4], r[5])]


def gold_arrow(rows: list[tuple[Any, ...]]) -> Any:
    """gold/recommendations rows (GOLD_SCHEMA tuples) as an arrow table."""
    import pyarrow as pa

    item = pa.struct([(C.ITEM_ID, pa.string()), (C.SCORE, pa.float32()), (C.RANK, pa.int32())])
    schema = pa.schema([(C.USER_ID, pa.string()), (C.VARIANT, pa.string()), (C.ITEMS, pa.list_(item)),
                        (C.MODEL_NAME, pa.string()), (C.MODEL_VERSION, pa.int32()), (C.SOURCE, pa.string()),
                        (C.UPDATED_AT, pa.timestamp("us"))])
    columns = list(zip(*rows, strict=True))
    items = [[{C.ITEM_ID: i, C.SCORE: s, C.RANK: r} for i, s, r in lst] for lst in columns[2]]
    return pa.table([list(columns[0]), list(columns[1]), items, *[list(c) for c in columns[3:]]], schema=schema)


def first_unseen(table: Any, key: str, seen: set[str]) -> Any:
    """The first row of each `key` value of `table` that is not in `seen`, in table order."""
    import pyarrow as pa

    keep, taken = [], set(seen)
    for n, value in enumerate(table.column(key).to_pylist()):
        if value not in taken:
            taken.add(value)
            keep.append(n)
    return table.take(pa.array(keep, pa.int64()))


def changed_rows(rows: Any, current: Any) -> Any:
    """Rows of `rows` that `current` does not hold with exactly the same values (arrow tables).

    The delta-rs twin of batch ingest's diff of Spark DataFrames against silver.

    Both are silver rows in the table's types, unique on the interaction keys: joined on them,
    a row is unchanged when every other column is equal (two nulls count as equal).
    """
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
