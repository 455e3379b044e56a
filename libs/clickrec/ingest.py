"""`clickrec ingest`: raw clickstream (or ratings) files -> bronze -> silver, behind a quality gate.

One function, `ingest`, does the I/O and orchestration around the pure transformations of
clickrec.transforms, as a sequence of named steps (parsing and validation are clickrec.staging's,
shared with the stream):

1. list the input (file, folder, glob, s3a://) and read it as raw text lines, so malformed,
   truncated and non-UTF-8 lines are kept with their text;
2. parse, type, flag every failing expectation (clickrec.quality) and hash the event_id, once,
   into a persisted batch that every later step reads (scratch Parquet for intermediate
   results goes under `<lake>/_staging/<run id>` and is removed at the end);
3. validate the batch with Great Expectations (data docs under `<lake>/_quality/data_docs`),
   and stop before any write when the rejected fraction exceeds ingest.max_rejected_fraction;
4. bronze/quarantine: every rejected row, written once per input (Delta txnAppId);
5. bronze/events: accepted rows not already there by event_id (a rerun adds nothing), inserted
   with an insert-only MERGE so that concurrent writers of the same events keep each once;
6. silver: the affected users' interactions recomputed from all of bronze, new user and item
   ids appended to the index tables, and only changed rows MERGEd into silver/interactions.

Each Delta commit is atomic and each step is idempotent, so a job killed between steps and run
again converges to the same tables, and rerunning the same input changes no table content.
The summary obeys rows_read = accepted + duplicates + quarantined.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clickrec import columns as C
from clickrec.choices import InputFormat
from clickrec.config import ClickrecConfig
from clickrec.errors import IdsKeptCollidingError, InputError
from clickrec.io import conflicts, delta, leases
from clickrec.io.failures import is_truncated_read
from clickrec.io.files import (
    InputFile,
    delete_path,
    fingerprint,
    ignoring_corrupt_files,
    list_input_files,
    remove_stale_dirs,
    truncated_files,
)
from clickrec.io.lake import Lake
from clickrec.quality import load_suite, preload_gx, validate_batch
from clickrec.staging import (
    count_batch,
    quarantine_rejected,
    stage_events,
    stage_ratings,
    suite_params,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

SUMMARY_TABLES: tuple[str, ...] = (
    C.BRONZE_EVENTS, C.BRONZE_QUARANTINE, C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX,
    C.SILVER_ITEM_INDEX,
)


def extend_index(spark: SparkSession, keys_df: DataFrame, key_col: str, path: str) -> int:
    """Give ids to the keys the index at `path` lacks; return how many it added.

    The stream may number new keys at the same time. Each writer numbers them after the
    largest id of the version it read and inserts them with a MERGE that skips a row whose key
    or id is taken; Delta fails a MERGE that a concurrent commit raced (it is redone). Keys
    skipped that way are numbered again from the newer version, so no key gets two ids and no
    id two keys.
    """
    from pyspark.sql import functions as F

    from clickrec.transforms.index import assign_new_ids

    added = 0
    for _ in range(conflicts.ATTEMPTS):
        version = delta.table_version(spark, path)
        if version is None:
            empty = spark.createDataFrame([], f"{C.SOURCE_ID} string, {C.IDX} int")
            try:
                delta.create(path, assign_new_ids(keys_df, empty, key_col=key_col))
            except Exception:
                if not delta.table_exists(spark, path):  # not a lost race to create it: a real error
                    raise
                continue
            return int(delta.last_operation_metrics(spark, path).get("numOutputRows", 0))
        index_df = delta.read_table(spark, path, version=version)
        new_df = assign_new_ids(keys_df, index_df, key_col=key_col)
        stats = new_df.agg(F.count(F.lit(1)).alias("n"), F.min(C.IDX).alias("first")).first()
        if stats is None or int(stats["n"]) == 0:
            return added
        wanted = int(stats["n"])
        # Ids are dense, so every row committed after `version` has an id above those it held:
        # only those rows can collide, and the MERGE reads and compares only them.
        newer = f"t.`{C.IDX}` >= {int(stats['first'])}"

        def insert(_attempt: int, rows: DataFrame = new_df, newer: str = newer) -> int:
            return delta.insert_unless_taken(path, rows, unique=(C.SOURCE_ID, C.IDX), target_filter=newer)

        inserted = conflicts.retry_on_conflict(insert, what=f"new ids into {path}")
        added += inserted
        if inserted == wanted:
            return added
        log.warning("%s: %d of %d new ids were taken by a concurrent writer; numbering them again",
                    path, wanted - inserted, wanted)
    raise IdsKeptCollidingError(path)


def _changed_rows(spark: SparkSession, rows_df: DataFrame, path: str) -> DataFrame:
    """Rows of `rows_df` that the table at `path` does not already hold with the same values."""
    if not delta.table_exists(spark, path):
        return rows_df
    target = delta.read_table(spark, path).select(*rows_df.columns)
    cond = [rows_df[c].eqNullSafe(target[c]) for c in rows_df.columns]
    return rows_df.join(target, on=cond, how="left_anti")


# --- silver: new ids and changed interactions --------------------------------------------------


@dataclass(frozen=True)
class SilverUpdate:
    """What an update of silver changed: interaction rows MERGEd, ids new to the indexes."""

    interactions_changed: int = 0
    new_users: int = 0
    new_items: int = 0


def update_silver(
    spark: SparkSession, lake: Lake, interactions_for: Callable[[int], DataFrame],
    *, update_when: str | None = None,
) -> SilverUpdate:
    """Index new users/items and MERGE the changed interactions, redone when a MERGE loses a race.

    `interactions_for(attempt)` (1, 2, ...) gives each attempt's interactions, read from scratch
    Parquet (they are read more than once); a redone attempt reads afresh what it writes. Ids
    an attempt committed stay committed when its MERGE loses, so every attempt's are counted.
    `update_when` goes to the MERGE (see delta.merge_upsert).
    """
    user_index, item_index = lake.path(C.SILVER_USER_INDEX), lake.path(C.SILVER_ITEM_INDEX)
    new_ids: list[tuple[int, int]] = []  # (users, items) per attempt

    def attempt(n: int) -> int:
        interactions = interactions_for(n)
        new_ids.append(_index_new_keys(spark, interactions, user_index, item_index))
        return _merge_changed_interactions(spark, lake, interactions, user_index, item_index,
                                           update_when=update_when)

    changed = conflicts.retry_on_conflict(attempt, what=C.SILVER_INTERACTIONS)
    return SilverUpdate(changed, sum(users for users, _ in new_ids), sum(items for _, items in new_ids))


def _index_new_keys(spark: SparkSession, interactions: DataFrame, user_index: str, item_index: str) -> tuple[int, int]:
    """Give ids to the interactions' users and items the indexes lack; (new users, new items)."""
    # Two small jobs dominated by Delta's commit overhead on the driver: run them side by side.
    with ThreadPoolExecutor(max_workers=2) as pool:
        users_added = pool.submit(extend_index, spark, interactions, C.USER_ID, user_index)
        items_added = pool.submit(extend_index, spark, interactions, C.ITEM_ID, item_index)
        new_users, new_items = users_added.result(), items_added.result()
    log.info("indexes: %d new users, %d new items", new_users, new_items)
    return new_users, new_items


def _merge_changed_interactions(
    spark: SparkSession, lake: Lake, interactions: DataFrame, user_index: str, item_index: str,
    *, update_when: str | None,
) -> int:
    """MERGE the interactions (with their ids) silver does not hold with the same values; how many."""
    from clickrec.transforms.index import attach_ids

    rows = attach_ids(
        interactions, delta.read_table(spark, user_index), delta.read_table(spark, item_index)
    ).select(*C.SILVER_COLUMNS)
    silver = lake.path(C.SILVER_INTERACTIONS)
    if not delta.table_exists(spark, silver):
        delta.append(silver, rows)
        changed = int(delta.last_operation_metrics(spark, silver).get("numOutputRows", 0))
    else:
        changes = _changed_rows(spark, rows, silver)
        changed = int(changes.count())
        if changed:
            delta.merge_upsert(silver, changes, keys=C.INTERACTION_KEYS, update_when=update_when)
    log.info("silver/interactions: %d rows inserted or updated", changed)
    return changed


def _to_scratch(spark: SparkSession, df: DataFrame, path: str) -> DataFrame:
    """`df` written once to scratch Parquet at `path` and read back, so later plans reuse it."""
    df.write.mode("overwrite").parquet(path)
    return spark.read.parquet(path)


# --- the ingest job ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestedRows:
    """What the events or ratings path wrote of a batch's accepted rows."""

    accepted: int  # rows new to the tables
    duplicates: int  # rows they already held
    silver: SilverUpdate = SilverUpdate()
    repaired_runs: list[str] = field(default_factory=list)  # killed runs whose users silver caught up on
    phase_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _CheckedBatch:
    """The staged batch's counts and Great Expectations' verdict on it."""

    rows: int
    rejected: int
    by_reason: dict[str, int]
    quality: dict[str, Any]


class _PhaseClock:
    """Seconds between successive laps, by the name of the phase each lap ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self._mark, 2)
        self._mark = now


def ingest(
    spark: SparkSession,
    config: ClickrecConfig,
    *,
    input_path: str,
    input_format: InputFormat | None = None,
) -> dict[str, Any]:
    """Ingest the files at `input_path` into bronze and silver; return the summary dict.

    `input_format` is rees46 (clickstream, REES46 schema through ingest.column_mapping) or
    ratings (`user item rating timestamp`, straight to silver); default ingest.format. The CLI
    and the config refuse any other value.
    Raises InputError for a missing input or a batch that fails the quality gate. An existing
    folder without files, an empty file and a file with only a header are not errors: the
    summary's `warnings` say that nothing was read.
    """
    started = time.monotonic()
    fmt = input_format or config.ingest.format
    files = list_input_files(spark, input_path)
    run_id = uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    input_key = fingerprint(files, fmt, config.ingest.model_dump_json())
    log.info("ingest %s: %d file(s) as %s, run %s", input_path, len(files), fmt, run_id)
    lake = Lake.from_config(config)
    leases.refuse_beside_stream(lake, "ingest", commit=config.s3.commit)
    stale = _remove_stale_staging(spark, lake, older_than_hours=config.ingest.stale_staging_hours)
    suite_path = config.ingest.events_suite if fmt == "rees46" else config.ingest.ratings_suite
    suite = load_suite(suite_path, suite_params(config))
    clock = _PhaseClock()
    if not files:  # an empty landing folder: nothing to read, nothing to write, said in warnings
        checked = _CheckedBatch(0, 0, {}, {"suite": suite["name"], "success": None, "data_docs": None})
        written, truncated = IngestedRows(accepted=0, duplicates=0), list[str]()
    else:
        checked, written, truncated = _stage_check_and_write(
            spark, config, lake, fmt, files, suite, run_id=run_id, now=now, input_key=input_key,
            input_path=input_path, clock=clock)
    seconds = time.monotonic() - started
    warnings = input_warnings(files, rows_read=checked.rows, truncated=truncated, input_path=input_path)
    for warning in warnings:
        log.warning("%s", warning)
    table_rows, table_versions = _table_sizes(spark, lake)
    phases = {**clock.seconds, **written.phase_seconds}
    summary: dict[str, Any] = {
        "run_id": run_id,
        "format": fmt,
        "input": input_path,
        "files": len(files),
        "rows_read": checked.rows,
        "warnings": warnings,
        "truncated_files": truncated,
        "accepted": written.accepted,
        "duplicates": written.duplicates,
        "quarantined": checked.rejected,
        "quarantined_by_reason": checked.by_reason,
        "users": table_rows[C.SILVER_USER_INDEX],
        "items": table_rows[C.SILVER_ITEM_INDEX],
        "interactions": table_rows[C.SILVER_INTERACTIONS],
        "interactions_changed": written.silver.interactions_changed,
        "new_users": written.silver.new_users,
        "new_items": written.silver.new_items,
        "repaired_runs": written.repaired_runs,
        "quality": checked.quality,
        "data_docs": checked.quality["data_docs"],
        "tables": table_versions,
        "seconds": round(seconds, 3),
        "phase_seconds": {k: v for k, v in phases.items() if v},
        "stale_staging_removed": len(stale),
        "rows_per_second": round(checked.rows / seconds, 1) if seconds > 0 else None,
    }
    assert summary["rows_read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    return summary


def _stage_check_and_write(
    spark: SparkSession, config: ClickrecConfig, lake: Lake, fmt: str, files: Sequence[InputFile],
    suite: dict[str, Any], *, run_id: str, now: datetime, input_key: str, input_path: str, clock: _PhaseClock,
) -> tuple[_CheckedBatch, IngestedRows, list[str]]:
    """Stage the files, count and validate them, pass the gate, then quarantine and write.

    Returns what was checked, what was written and the truncated files (ingest's summary).
    """
    from pyspark.sql import functions as F

    staging = lake.path(f"_staging/{run_id}")
    try:
        staged, truncated = _parse_once(spark, config, fmt, files, suite, f"{staging}/batch")
        clock.lap("parse")
        docs_dir = lake.path("_quality/data_docs") if config.ingest.data_docs else None
        checked = _count_and_validate(staged, suite, run_id, docs_dir=docs_dir)
        clock.lap("count_gx")
        _check_quality_gate(config, input_path, checked)
        if checked.rejected:
            quarantine_rejected(spark, lake, staged, fmt=fmt, input_key=input_key, run_id=run_id, now=now,
                                skip_held=True)
        clock.lap("quarantine")
        valid = staged.where(F.size(C.REASONS) == 0)
        valid_rows = checked.rows - checked.rejected
        if fmt == "rees46":
            written = ingest_valid_events(spark, config, lake, valid, valid_rows, run_id, now, staging)
        else:
            written = _ingest_valid_ratings(spark, lake, valid, valid_rows, run_id, staging)
            clock.lap("silver")
    finally:
        delete_path(spark, staging)
    return checked, written, truncated


def input_warnings(files: Sequence[InputFile], *, rows_read: int, truncated: Sequence[str],
                   input_path: str) -> list[str]:
    """What the summary warns about the input: no file, no rows at all, empty files, truncated files.

    A scheduled run on an empty landing folder then neither fails nor passes silently: it exits
    0, commits nothing, and says so.
    """
    warnings = []
    if not files:
        warnings.append(f"--input {input_path}: the folder holds no input file; nothing was written")
    elif rows_read == 0:
        warnings.append(f"no rows read from {len(files)} file(s): empty, or only a header; nothing was written")
    empty = [f.path for f in files if f.size == 0]
    if empty and rows_read:
        warnings.append(f"{len(empty)} empty file(s): {', '.join(empty)}")
    if truncated:
        warnings.append(f"{len(truncated)} truncated file(s), lines up to the cut ingested: {', '.join(truncated)}")
    return warnings


def _remove_stale_staging(spark: SparkSession, lake: Lake, *, older_than_hours: float) -> list[str]:
    """Remove the scratch folders killed jobs left behind; their names."""
    stale = remove_stale_dirs(spark, lake.path("_staging"), older_than_hours=older_than_hours)
    if stale:
        log.warning("removed %d scratch folder(s) left by killed jobs: %s", len(stale), ", ".join(stale))
    return stale


def _parse_once(
    spark: SparkSession, config: ClickrecConfig, fmt: str, files: Sequence[InputFile], suite: dict[str, Any],
    path: str,
) -> tuple[DataFrame, list[str]]:
    """The input staged (parsed, typed, flagged, hashed) once into scratch Parquet at `path`,
    and the compressed files that were cut off (their lines up to the cut are staged).

    Counting, GX, quarantine and bronze all scan the parsed batch: parsed once (one pass, like
    a plain copy), every later step reads only the columns it needs from there. Nothing is
    cached, so memory stays flat with size.
    """
    stage = stage_events if fmt == "rees46" else stage_ratings
    staged_plan = stage(spark, config, files, suite)
    # GX's slow import overlaps the parse job. Started only now: while the plan above is
    # built (hundreds of py4j calls), an import holding the GIL would slow the build down.
    preload_gx()
    try:
        return _to_scratch(spark, staged_plan, path), []
    except Exception as exc:
        if not is_truncated_read(exc):
            raise
        truncated = truncated_files(spark, list(files))
        if not truncated:
            raise
    # A cut-off compressed file: its readable lines are ingested, the rest is named (the
    # summary's `truncated_files`), not a failed job. Only this rare path reads twice.
    log.warning("%d truncated file(s), ingesting the lines before the cut: %s", len(truncated), ", ".join(truncated))
    with ignoring_corrupt_files(spark):
        return _to_scratch(spark, stage(spark, config, files, suite), path), truncated


def _count_and_validate(staged: DataFrame, suite: dict[str, Any], run_id: str, *,
                        docs_dir: str | None) -> _CheckedBatch:
    """Count the staged batch's rows and rejections, and validate it with Great Expectations.

    GX (mostly Python: suite setup, result handling, data docs rendering) runs beside the
    count; both only read the scratch batch. `docs_dir`: where GX renders its data docs (None: none).
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        validation = pool.submit(validate_batch, staged, suite, run_name=run_id, docs_dir=docs_dir)
        rows_read, quarantined, by_reason = count_batch(staged)
        log.info("read %d rows, %d rejected %s", rows_read, quarantined, by_reason)
        quality = validation.result()
    log.info("quality: %s", {k: v for k, v in quality.items() if k != "unexpected"})
    return _CheckedBatch(rows_read, quarantined, by_reason, quality)


def _check_quality_gate(config: ClickrecConfig, input_path: str, checked: _CheckedBatch) -> None:
    """Raise InputError, before any write, when the rejected fraction exceeds ingest.max_rejected_fraction."""
    rows_read, quarantined = checked.rows, checked.rejected
    if rows_read and quarantined / rows_read > config.ingest.max_rejected_fraction:
        raise InputError(
            f"--input {input_path}: quality gate failed, {quarantined} of {rows_read} rows "
            f"rejected ({quarantined / rows_read:.1%} > ingest.max_rejected_fraction="
            f"{config.ingest.max_rejected_fraction}); by reason {checked.by_reason}; data docs "
            f"{checked.quality['data_docs']}; nothing was written"
        )


def _table_sizes(spark: SparkSession, lake: Lake) -> tuple[dict[str, int], dict[str, int | None]]:
    """(rows of the indexes and silver, versions of SUMMARY_TABLES) for the summary."""
    # Row counts and versions of five tables: many small Delta log reads, run side by side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        sizes = {
            t: pool.submit(delta.count_rows, spark, lake.path(t))
            for t in (C.SILVER_USER_INDEX, C.SILVER_ITEM_INDEX, C.SILVER_INTERACTIONS)
        }
        versions = {
            t: pool.submit(lake.version, spark, t) for t in SUMMARY_TABLES
        }
        return {t: f.result() for t, f in sizes.items()}, {t: f.result() for t, f in versions.items()}


# --- the events path: bronze, then silver ------------------------------------------------------


def ingest_valid_events(
    spark: SparkSession, config: ClickrecConfig, lake: Lake, valid: DataFrame, valid_rows: int,
    run_id: str, now: datetime, staging: str,
) -> IngestedRows:
    """Accepted events -> bronze/events (new event_ids only) -> silver for the affected users.

    The affected users are the batch's and those of any killed ingest's bronze rows (their
    run ids under `repaired_runs`). `phase_seconds` holds the seconds spent on bronze and on
    silver.
    """
    if valid_rows == 0:
        return IngestedRows(accepted=0, duplicates=0)
    # The stream holds its bronze and silver commits meanwhile (a long MERGE would lose every
    # race to it). A failure leaves the silver lease expired, not dropped (like a kill): the
    # next ingest repairs silver for this run's bronze rows if it got as far as committing them.
    with leases.hold(lake, C.SILVER_INTERACTIONS, owner=f"ingest-{run_id}", expire_on_error=True), \
            leases.hold(lake, C.BRONZE_EVENTS, owner=f"ingest-{run_id}"):
        try:
            return _ingest_valid_events(spark, config, lake, valid, valid_rows, run_id, now, staging)
        except _BronzeCreatedMeanwhile:
            # Another writer created bronze while this run was writing it first: redo the
            # batch as an update of the table that now exists, deduplicated against it.
            log.warning("bronze/events was created by another writer meanwhile; deduplicating against it")
            return _ingest_valid_events(spark, config, lake, valid, valid_rows, run_id, now, staging)


class _BronzeCreatedMeanwhile(Exception):
    """The first write of bronze lost to another writer's: nothing of this run was committed."""


@dataclass(frozen=True)
class _BronzeWrite:
    """The bronze step's result: what silver is recomputed from."""

    accepted: int  # events new to bronze
    affected: DataFrame  # the users whose interactions are recomputed
    interactions: DataFrame  # their interactions (already scratch Parquet when in_scratch)
    in_scratch: bool
    repaired_runs: list[str] = field(default_factory=list)  # killed runs whose bronze rows had no silver
    dead_owners: list[str] = field(default_factory=list)  # killed runs' expired leases, dropped after silver


def _ingest_valid_events(
    spark: SparkSession, config: ClickrecConfig, lake: Lake, valid: DataFrame, valid_rows: int,
    run_id: str, now: datetime, staging: str,
) -> IngestedRows:
    started = time.monotonic()
    bronze = lake.path(C.BRONZE_EVENTS)
    if delta.table_exists(spark, bronze):
        written = _append_new_events(spark, config, lake, valid, run_id, now, staging, bronze)
    else:
        written = _create_bronze(spark, config, valid, run_id, now, staging, bronze)
    log.info("bronze/events: %d accepted, %d duplicates", written.accepted, valid_rows - written.accepted)
    bronze_done = time.monotonic()

    def interactions_for(attempt: int) -> DataFrame:
        # The stream may MERGE the same users' rows meanwhile: redone from bronze re-read.
        if attempt == 1 and written.in_scratch:
            return written.interactions
        recomputed = written.interactions if attempt == 1 else _interactions_of(
            config, _events_of_users(spark, bronze, written.affected))
        return _to_scratch(spark, recomputed, f"{staging}/interactions")

    silver = update_silver(spark, lake, interactions_for)
    if written.dead_owners:  # their users are recomputed now
        leases.drop(lake, C.SILVER_INTERACTIONS, written.dead_owners)
    return IngestedRows(
        accepted=written.accepted, duplicates=valid_rows - written.accepted, silver=silver,
        repaired_runs=written.repaired_runs,
        phase_seconds={"bronze": round(bronze_done - started, 2), "silver": round(time.monotonic() - bronze_done, 2)},
    )


def _run_stamp(run_id: str, now: datetime) -> tuple[Column, Column]:
    """The columns bronze/events adds to each event: the run that wrote it and when."""
    from pyspark.sql import functions as F

    return F.lit(run_id).alias(C.INGEST_RUN_ID), F.lit(now).cast("timestamp").alias(C.INGESTED_AT)


def _create_bronze(
    spark: SparkSession, config: ClickrecConfig, valid: DataFrame, run_id: str, now: datetime, staging: str,
    bronze: str,
) -> _BronzeWrite:
    """First write of bronze/events: the batch, one row per event_id.

    There are valid rows, so never an empty commit; its metrics count them. No shuffle of
    whole rows: each task writes its rows into their event_date folders. Bronze will hold
    exactly these events, so silver's interactions are computed from them into scratch Parquet
    while bronze is written (the jobs share the 2 cores, filling each other's idle tails);
    nothing reaches silver before bronze is committed.
    """
    new_events = dedup_by_event_id(spark, valid, f"{staging}/repeated_ids").select(
        *C.BRONZE_EVENT_COLUMNS, *_run_stamp(run_id, now))
    inter_path = f"{staging}/interactions"
    with ThreadPoolExecutor(max_workers=1) as pool:
        inter_done = pool.submit(
            lambda: _interactions_of(config, new_events).write.mode("overwrite").parquet(inter_path)
        )
        try:  # create, not append: appending to a table created meanwhile would skip the dedup
            delta.create(bronze, new_events, partition_by=[C.EVENT_DATE])
        except Exception as exc:
            if not delta.table_exists(spark, bronze):  # not a race: the error itself
                raise
            raise _BronzeCreatedMeanwhile(bronze) from exc
        inter_done.result()
    accepted = int(delta.last_operation_metrics(spark, bronze).get("numOutputRows", 0))
    return _BronzeWrite(accepted=accepted, affected=valid.select(C.USER_ID).distinct(),
                        interactions=spark.read.parquet(inter_path), in_scratch=True)


def _append_new_events(
    spark: SparkSession, config: ClickrecConfig, lake: Lake, valid: DataFrame, run_id: str, now: datetime, staging: str,
    bronze: str,
) -> _BronzeWrite:
    """Append the events bronze/events lacks; recompute the batch's users and killed runs' users.

    Every user of the batch is recomputed, not only those with new events: after a job killed
    between bronze and silver, the rerun finds no new events but repairs silver.
    """
    affected = valid.select(C.USER_ID).distinct()
    dead, repaired, orphaned_users = _killed_runs(spark, lake, bronze)
    if orphaned_users is not None:
        affected = affected.unionByName(orphaned_users).distinct()
    known = delta.read_table(spark, bronze).select(C.EVENT_ID)
    candidates = valid.dropDuplicates([C.EVENT_ID]).join(known, on=C.EVENT_ID, how="left_anti")
    new_events = candidates.select(*C.BRONZE_EVENT_COLUMNS, *_run_stamp(run_id, now)).repartition(C.EVENT_DATE)
    # Deduplicated once into scratch Parquet, which the MERGE reads; nothing new, no commit.
    staged_new = _to_scratch(spark, new_events, f"{staging}/new_events")
    accepted = _insert_new_events(bronze, staged_new)
    interactions = _interactions_of(config, _events_of_users(spark, bronze, affected))
    return _BronzeWrite(accepted=accepted, affected=affected, interactions=interactions, in_scratch=False,
                        repaired_runs=repaired, dead_owners=dead)


def _insert_new_events(bronze: str, staged_new: DataFrame) -> int:
    """Insert the staged events into bronze unless their event_id is there; how many it inserted
    (none and no commit when nothing is staged: a rerun leaves bronze's version alone).

    An insert-only MERGE on event_id over the batch's event dates, not a blind append: a
    writer that committed events of those dates since bronze was read (another ingest of the
    same input, the stream) fails it with a conflict, and the redo skips what that writer
    added, so each event is in bronze once whatever writers race.
    """
    dates = [r[0] for r in staged_new.select(C.EVENT_DATE).distinct().collect()]
    if not dates:
        return 0
    same_dates = delta.in_dates(C.EVENT_DATE, dates, alias="t")
    return conflicts.retry_on_conflict(
        lambda _attempt: delta.insert_unless_taken(bronze, staged_new, unique=(C.EVENT_ID,), target_filter=same_dates),
        what=C.BRONZE_EVENTS,
    )


def _killed_runs(spark: SparkSession, lake: Lake, bronze: str) -> tuple[list[str], list[str], DataFrame | None]:
    """(expired ingest leases, their runs with bronze rows, those rows' users or None).

    A job killed (or failed) after its bronze commit left silver without its events, and its
    lease (owner ingest-<run id>) expired without being dropped: its bronze rows name the
    users to recompute with this batch's, so any next ingest repairs it, not only a rerun.
    """
    from pyspark.sql import functions as F

    dead = leases.expired_owners(lake, C.SILVER_INTERACTIONS, "ingest-")
    if not dead:
        return dead, [], None
    orphaned = delta.read_table(spark, bronze).where(
        F.col(C.INGEST_RUN_ID).isin([owner.removeprefix("ingest-") for owner in dead]))
    repaired = sorted(r[0] for r in orphaned.select(C.INGEST_RUN_ID).distinct().collect())
    if not repaired:  # a run that died before its bronze commit left nothing to repair
        return dead, [], None
    log.warning("repairing silver for %d killed run(s): %s", len(repaired), ", ".join(repaired))
    return dead, repaired, orphaned.select(C.USER_ID)


def _events_of_users(spark: SparkSession, bronze: str, users: DataFrame) -> DataFrame:
    """All of bronze/events' events of `users` (a user_id column)."""
    return delta.read_table(spark, bronze).join(users, on=C.USER_ID, how="left_semi")


def _interactions_of(config: ClickrecConfig, events_df: DataFrame) -> DataFrame:
    """events_to_interactions over `events_df`, shuffled once by user."""
    from clickrec.transforms.clickstream import events_to_interactions

    ic = config.ingest
    # One shuffle by user serves both the per-(user, session) dwell window and the
    # per-(user, item) aggregation (a partitioning by user satisfies both).
    # Only the columns the transform reads cross the shuffle (not the whole bronze row).
    narrow = events_df.select(*C.INTERACTION_INPUTS)
    return narrow.repartition(C.USER_ID).transform(
        events_to_interactions,
        cap_seconds=ic.dwell_cap_seconds,
        last_view_seconds=ic.last_view_dwell_seconds,
        rating=ic.rating.model_dump(),
    )


def dedup_by_event_id(spark: SparkSession, valid: DataFrame, scratch: str) -> DataFrame:
    """`valid` with one row per event_id, without shuffling whole rows.

    Duplicates are rare (a repeated line, a re-sent event), so only the 64-bit hashes of the
    event ids are shuffled to find the ids seen more than once; rows with a unique id pass
    through where they are, and only the few rows of a repeated id are deduplicated by
    event_id itself (a hash collision just sends a unique row through that exact step).
    Deterministic: the same input gives the same rows, however often the plan is evaluated.
    """
    from pyspark.sql import functions as F

    h = "_event_id_hash"
    hashed = valid.withColumn(h, F.xxhash64(C.EVENT_ID))
    # Found once into scratch Parquet, so every later plan over the result reuses it.
    hashed.groupBy(h).count().where(F.col("count") > 1).select(h).write.mode("overwrite").parquet(scratch)
    repeated = spark.read.parquet(scratch)
    unique = hashed.join(repeated, on=h, how="left_anti")
    # The smallest row of each repeated id (compared column by column), not an arbitrary one:
    # every evaluation of this plan keeps the same row.
    others = [c for c in hashed.columns if c not in (C.EVENT_ID, h)]
    dups = (
        hashed.join(repeated, on=h, how="left_semi")
        .groupBy(C.EVENT_ID)
        .agg(F.min(F.struct(*others)).alias("_row"))
        .select(C.EVENT_ID, *[F.col(f"_row.`{c}`").alias(c) for c in others])
    )
    return unique.drop(h).unionByName(dups)


# --- the ratings path: straight to silver ------------------------------------------------------


def _ingest_valid_ratings(
    spark: SparkSession, lake: Lake, valid: DataFrame, valid_rows: int, run_id: str, staging: str
) -> IngestedRows:
    """Accepted explicit ratings -> silver directly; accepted = (user, item) rows that changed.

    The latest rating of a (user, item) wins across batches as it does within one: a rating
    older than the one silver holds changes nothing, so the result does not depend on how the
    ratings were split into batches. Rows that change nothing count as duplicates.
    Like the events path: a lease asks the stream to hold its silver commits, and a MERGE a
    concurrent commit raced is redone from a fresh read of silver.
    """
    from clickrec.transforms.clickstream import ratings_to_interactions

    if valid_rows == 0:
        return IngestedRows(accepted=0, duplicates=0)
    interactions = valid.transform(ratings_to_interactions)

    def interactions_for(_attempt: int) -> DataFrame:
        newer = _not_older_than_silver(spark, lake, interactions)
        return _to_scratch(spark, newer, f"{staging}/interactions")

    with leases.hold(lake, C.SILVER_INTERACTIONS, owner=f"ingest-{run_id}"):  # no bronze: nothing to repair
        silver = update_silver(spark, lake, interactions_for, update_when=_NEWER_RATING)
    accepted = silver.interactions_changed
    return IngestedRows(accepted=accepted, duplicates=valid_rows - accepted, silver=silver)


# The same rule inside the MERGE, so that a rating committed by another ingest between the
# check above and the MERGE is not overwritten by an older one.
_NEWER_RATING = (
    f"t.`{C.LAST_SEEN}` IS NULL OR s.`{C.LAST_SEEN}` > t.`{C.LAST_SEEN}` OR "
    f"(s.`{C.LAST_SEEN}` = t.`{C.LAST_SEEN}` AND s.`{C.RATING}` >= t.`{C.RATING}`)"
)


def _not_older_than_silver(spark: SparkSession, lake: Lake, ratings: DataFrame) -> DataFrame:
    """The (user, item) ratings at least as recent as silver's: later time, or same time and
    a rating not lower (the tie rule of `ratings_to_interactions`)."""
    from pyspark.sql import functions as F

    if not lake.exists(spark, C.SILVER_INTERACTIONS):
        return ratings
    held = lake.read(spark, C.SILVER_INTERACTIONS).select(
        C.USER_ID, C.ITEM_ID, F.col(C.LAST_SEEN).alias("_held_seen"), F.col(C.RATING).alias("_held_rating")
    )
    seen, held_seen = F.col(C.LAST_SEEN), F.col("_held_seen")
    newer = (
        held_seen.isNull() | (seen > held_seen)
        | ((seen == held_seen) & (F.col(C.RATING) >= F.col("_held_rating")))
    )
    return (
        ratings.join(held, on=list(C.INTERACTION_KEYS), how="left")
        .where(newer).select(*ratings.columns)
    )


def recompute_interactions(spark: SparkSession, config: ClickrecConfig) -> DataFrame:
    """silver/interactions as a full recompute over all of bronze/events would give it.

    Uses the same transformations and the index tables; tests compare it with the
    incrementally maintained table.
    """
    from clickrec.transforms.clickstream import events_to_interactions
    from clickrec.transforms.index import attach_ids

    ic, lake = config.ingest, Lake.from_config(config)
    inter = lake.read(spark, C.BRONZE_EVENTS).transform(
        events_to_interactions,
        cap_seconds=ic.dwell_cap_seconds,
        last_view_seconds=ic.last_view_dwell_seconds,
        rating=ic.rating.model_dump(),
    )
    return attach_ids(
        inter,
        lake.read(spark, C.SILVER_USER_INDEX),
        lake.read(spark, C.SILVER_ITEM_INDEX),
    ).select(*C.SILVER_COLUMNS)
