"""`clickrec ingest`: raw clickstream (or ratings) files -> bronze -> silver, behind a quality gate.

One function, `ingest`, does the I/O and orchestration around the pure transformations of
clickrec.transforms:

1. list the input (file, folder, glob, s3a://) and read it as raw text lines, so malformed,
   truncated and non-UTF-8 lines are kept with their text;
2. parse, type, flag every failing expectation (clickrec.quality) and hash the event_id, once,
   into a persisted batch that every later step reads (scratch Parquet for intermediate
   results goes under `<lake>/_staging/<run id>` and is removed at the end);
3. validate the batch with Great Expectations (data docs under `<lake>/_quality/data_docs`),
   and stop before any write when the rejected fraction exceeds ingest.max_rejected_fraction;
4. bronze/quarantine: every rejected row, written once per input (Delta txnAppId);
5. bronze/events: accepted rows not already there by event_id (a rerun adds nothing);
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
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError
from clickrec.io import delta
from clickrec.io.files import InputFile, delete_path, fingerprint, list_input_files
from clickrec.quality import load_suite, rejection_checks, validate_batch

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

BRONZE_COLUMNS: tuple[str, ...] = (
    C.EVENT_ID, C.EVENT_TIME, C.EVENT_TYPE, C.PRODUCT_ID, C.CATEGORY_ID, C.CATEGORY_CODE,
    C.BRAND, C.PRICE, C.USER_ID, C.USER_SESSION, C.EVENT_DATE, C.SOURCE_FILE,
    C.INGEST_RUN_ID, C.INGESTED_AT,
)
QUARANTINE_COLUMNS: tuple[str, ...] = (
    C.RAW_LINE, C.REASONS, C.SOURCE_FILE, C.INPUT_FORMAT, C.INGEST_RUN_ID, C.INGESTED_AT,
)
SILVER_COLUMNS: tuple[str, ...] = (
    C.USER_ID, C.ITEM_ID, C.USER_IDX, C.ITEM_IDX, C.VIEWS, C.DWELL_SECONDS, C.CARTS,
    C.PURCHASES, C.FIRST_SEEN, C.LAST_SEEN, C.RATING,
)
SUMMARY_TABLES: tuple[str, ...] = (
    C.BRONZE_EVENTS, C.BRONZE_QUARANTINE, C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX,
    C.SILVER_ITEM_INDEX,
)
_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
_RATINGS_HEADER = r'(?i)^\s*"?user'


def _file_format(config: ClickrecConfig, files: Sequence[InputFile]) -> str:
    """csv or json for the input, from ingest.file_format or the file names (auto)."""
    if config.ingest.file_format != "auto":
        return config.ingest.file_format
    kinds = {
        "json" if f.path.lower().removesuffix(".gz").endswith(_JSON_SUFFIXES) else "csv" for f in files
    }
    if len(kinds) > 1:
        raise InputError(
            "--input mixes JSON-lines and CSV files; ingest them separately or set ingest.file_format"
        )
    return kinds.pop()


def _read_lines(spark: SparkSession, files: Sequence[InputFile]) -> DataFrame:
    """Every line of every file as text (bytes kept as read), with its source file."""
    from pyspark.sql import functions as F

    return spark.read.text([f.path for f in files]).select(
        F.col(C.VALUE), F.col("_metadata.file_path").alias(C.SOURCE_FILE)
    )


def _suite_params(config: ClickrecConfig) -> dict[str, Any]:
    ic = config.ingest
    return {
        "column_count": len(ic.source_columns),
        "event_time_min": ic.event_time_min,
        "event_time_max": ic.event_time_max,
    }


def stage_events(spark: SparkSession, config: ClickrecConfig, files: Sequence[InputFile], suite: dict[str, Any]) -> DataFrame:
    """Raw clickstream lines -> typed, flagged, hashed rows (not yet written)."""
    return stage_event_lines(_read_lines(spark, files), config, file_format=_file_format(config, files), suite=suite)


def stage_event_lines(lines: DataFrame, config: ClickrecConfig, *, file_format: str, suite: dict[str, Any]) -> DataFrame:
    """(value, source_file) text lines -> typed, flagged, hashed rows; shared by ingest and stream."""
    from pyspark.sql import functions as F

    from clickrec.transforms import clickstream as T

    ic = config.ingest
    keep = (C.VALUE, C.SOURCE_FILE, C.COLUMN_COUNT, C.UTF8_VALID)
    if file_format == "json":
        parsed = lines.transform(T.parse_json_lines, source_columns=ic.source_columns)
    else:
        if ic.header:
            header = ic.delimiter.join(ic.source_columns)
            unquoted = F.trim(F.regexp_replace(F.col(C.VALUE), '"', ""))
            lines = lines.where(unquoted != F.lit(header))
        parsed = lines.transform(
            T.parse_csv_lines, source_columns=ic.source_columns, delimiter=ic.delimiter
        )
    for canonical, source in ic.column_mapping.items():
        if source not in ic.source_columns:
            raise InputError(
                f"ingest.column_mapping.{canonical}: source column {source!r} is not in "
                f"ingest.source_columns {list(ic.source_columns)}"
            )
    return (
        parsed.transform(T.to_canonical, column_mapping=ic.column_mapping, keep=keep)
        .transform(T.type_events, time_formats=ic.event_time_formats)
        .transform(T.flag_rejections, checks=rejection_checks(suite))
        .transform(T.add_event_id)
        .withColumn(
            C.RAW_LINE,
            F.when(F.size(C.REASONS) > 0, F.make_valid_utf8(F.col(C.VALUE))),
        )
        .drop(C.VALUE)
    )


def stage_ratings(spark: SparkSession, config: ClickrecConfig, files: Sequence[InputFile], suite: dict[str, Any]) -> DataFrame:
    """Raw `user item rating timestamp` lines -> typed, flagged rows (not yet written)."""
    from pyspark.sql import functions as F

    from clickrec.transforms import clickstream as T

    lines = _read_lines(spark, files).where(~F.col(C.VALUE).rlike(_RATINGS_HEADER))
    return (
        lines.transform(T.parse_ratings_lines, delimiter_regex=config.ingest.ratings_delimiter)
        .transform(T.flag_rejections, checks=rejection_checks(suite))
        .withColumn(
            C.RAW_LINE,
            F.when(F.size(C.REASONS) > 0, F.make_valid_utf8(F.col(C.VALUE))),
        )
        .drop(C.VALUE)
    )


def _count_batch(staged: DataFrame) -> tuple[int, int, dict[str, int]]:
    """(rows, rejected rows, rejected rows per reason) of a staged batch."""
    from pyspark.sql import functions as F

    rejected = F.size(C.REASONS) > 0
    row = staged.agg(
        F.count(F.lit(1)).alias("rows"), F.count(F.when(rejected, F.lit(1))).alias("rejected")
    ).first()
    by_reason = (
        staged.where(rejected)
        .select(F.explode(C.REASONS).alias("reason"))
        .groupBy("reason")
        .count()
        .collect()
    )
    counts = {r["reason"]: int(r["count"]) for r in sorted(by_reason, key=lambda r: r["reason"])}
    return int(row["rows"]), int(row["rejected"]), counts


def _extend_index(spark: SparkSession, keys_df: DataFrame, key_col: str, path: str) -> int:
    """Append ids for keys not yet in the index at `path`; return how many were added."""
    from clickrec.transforms.index import assign_new_ids

    if delta.table_exists(spark, path):
        index_df = delta.read_table(spark, path)
    else:
        index_df = spark.createDataFrame([], f"{C.SOURCE_ID} string, {C.IDX} int")
    new_df = assign_new_ids(keys_df, index_df, key_col=key_col)
    if not delta.table_exists(spark, path):
        delta.append(new_df, path)
        return int(delta.last_operation_metrics(spark, path).get("numOutputRows", 0))
    added = new_df.count()
    if added:
        delta.append(new_df, path)
    return int(added)


def _changed_rows(spark: SparkSession, rows_df: DataFrame, path: str) -> DataFrame:
    """Rows of `rows_df` that the table at `path` does not already hold with the same values."""
    if not delta.table_exists(spark, path):
        return rows_df
    target = delta.read_table(spark, path).select(*rows_df.columns)
    cond = [rows_df[c].eqNullSafe(target[c]) for c in rows_df.columns]
    return rows_df.join(target, on=cond, how="left_anti")


def _update_silver(spark: SparkSession, config: ClickrecConfig, interactions_df: DataFrame, staging: str) -> dict[str, int]:
    """Index new users/items and MERGE changed interactions; returns counts of what changed."""
    from clickrec.transforms.index import attach_ids

    inter_path = f"{staging}/interactions"
    interactions_df.write.mode("overwrite").parquet(inter_path)
    inter = spark.read.parquet(inter_path)
    user_index = delta.table_path(config, C.SILVER_USER_INDEX)
    item_index = delta.table_path(config, C.SILVER_ITEM_INDEX)
    new_users = _extend_index(spark, inter, C.USER_ID, user_index)
    new_items = _extend_index(spark, inter, C.ITEM_ID, item_index)
    log.info("indexes: %d new users, %d new items", new_users, new_items)
    rows = attach_ids(
        inter, delta.read_table(spark, user_index), delta.read_table(spark, item_index)
    ).select(*SILVER_COLUMNS)
    silver = delta.table_path(config, C.SILVER_INTERACTIONS)
    if not delta.table_exists(spark, silver):
        delta.append(rows, silver)
        changed = int(delta.last_operation_metrics(spark, silver).get("numOutputRows", 0))
    else:
        changes = _changed_rows(spark, rows, silver)
        changed = int(changes.count())
        if changed:
            delta.merge_upsert(spark, changes, silver, keys=C.INTERACTION_KEYS)
    log.info("silver/interactions: %d rows inserted or updated", changed)
    return {"interactions_changed": changed, "new_users": new_users, "new_items": new_items}


def quarantine_rejected(spark: SparkSession, config: ClickrecConfig, staged: DataFrame, *, fmt: str, input_key: str,
                        run_id: str, now: datetime, txn_version: int = 1) -> None:
    """Append the batch's rejected rows to bronze/quarantine once per (input_key, txn_version)."""
    from pyspark.sql import functions as F

    rejected = staged.where(F.size(C.REASONS) > 0).select(
        C.RAW_LINE, C.REASONS, C.SOURCE_FILE,
        F.lit(fmt).alias(C.INPUT_FORMAT),
        F.lit(run_id).alias(C.INGEST_RUN_ID),
        F.lit(now).cast("timestamp").alias(C.INGESTED_AT),
    )
    delta.append_once(
        rejected.select(*QUARANTINE_COLUMNS),
        delta.table_path(config, C.BRONZE_QUARANTINE),
        app_id=f"clickrec-ingest-quarantine-{input_key[:40]}",
        version=txn_version,
    )


def ingest(
    spark: SparkSession,
    config: ClickrecConfig,
    *,
    input_path: str,
    input_format: str | None = None,
) -> dict[str, Any]:
    """Ingest the files at `input_path` into bronze and silver; return the summary dict.

    `input_format` is rees46 (clickstream, REES46 schema through ingest.column_mapping) or
    ratings (`user item rating timestamp`, straight to silver); default ingest.format.
    Raises InputError for a missing input or a batch that fails the quality gate.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    started = time.monotonic()
    fmt = input_format or config.ingest.format
    if fmt not in ("rees46", "ratings"):
        raise InputError(f"--format {fmt}: expected rees46 or ratings")
    files = list_input_files(spark, input_path)
    run_id = uuid.uuid4().hex
    now = datetime.now(UTC).replace(tzinfo=None)
    input_key = fingerprint(files, fmt, config.ingest.model_dump_json())
    log.info("ingest %s: %d file(s) as %s, run %s", input_path, len(files), fmt, run_id)
    staging = delta.table_path(config, f"_staging/{run_id}")
    suite_path = config.ingest.events_suite if fmt == "rees46" else config.ingest.ratings_suite
    suite = load_suite(suite_path, _suite_params(config))
    staged: DataFrame | None = None
    try:
        stage = stage_events if fmt == "rees46" else stage_ratings
        # Counting, GX, quarantine and bronze all scan the parsed batch: parse once and keep it
        # (memory, spilling to disk); evicted blocks are re-parsed from the same input.
        staged = stage(spark, config, files, suite).persist(StorageLevel.MEMORY_AND_DISK)
        rows_read, quarantined, by_reason = _count_batch(staged)
        log.info("read %d rows, %d rejected %s", rows_read, quarantined, by_reason)
        docs_dir = delta.table_path(config, "_quality/data_docs") if config.ingest.data_docs else None
        quality = validate_batch(staged, suite, run_name=run_id, docs_dir=docs_dir)
        log.info("quality: %s", {k: v for k, v in quality.items() if k != "unexpected"})
        if rows_read and quarantined / rows_read > config.ingest.max_rejected_fraction:
            raise InputError(
                f"--input {input_path}: quality gate failed, {quarantined} of {rows_read} rows "
                f"rejected ({quarantined / rows_read:.1%} > ingest.max_rejected_fraction="
                f"{config.ingest.max_rejected_fraction}); by reason {by_reason}; data docs "
                f"{quality['data_docs']}; nothing was written"
            )
        if quarantined:
            quarantine_rejected(spark, config, staged, fmt=fmt, input_key=input_key, run_id=run_id, now=now)
        valid = staged.where(F.size(C.REASONS) == 0)
        if fmt == "rees46":
            counts = ingest_valid_events(spark, config, valid, rows_read - quarantined, run_id, now, staging)
        else:
            counts = _ingest_valid_ratings(spark, config, valid, rows_read - quarantined, staging)
    finally:
        if staged is not None:
            staged.unpersist()
        delete_path(spark, staging)
    seconds = time.monotonic() - started
    summary: dict[str, Any] = {
        "run_id": run_id,
        "format": fmt,
        "input": input_path,
        "files": len(files),
        "rows_read": rows_read,
        "accepted": counts["accepted"],
        "duplicates": counts["duplicates"],
        "quarantined": quarantined,
        "quarantined_by_reason": by_reason,
        "users": delta.count_rows(spark, delta.table_path(config, C.SILVER_USER_INDEX)),
        "items": delta.count_rows(spark, delta.table_path(config, C.SILVER_ITEM_INDEX)),
        "interactions": delta.count_rows(spark, delta.table_path(config, C.SILVER_INTERACTIONS)),
        "interactions_changed": counts.get("interactions_changed", 0),
        "new_users": counts.get("new_users", 0),
        "new_items": counts.get("new_items", 0),
        "quality": quality,
        "data_docs": quality["data_docs"],
        "tables": {
            t: delta.table_version(spark, delta.table_path(config, t)) for t in SUMMARY_TABLES
        },
        "seconds": round(seconds, 3),
        "rows_per_second": round(rows_read / seconds, 1) if seconds > 0 else None,
    }
    assert summary["rows_read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    return summary


def ingest_valid_events(
    spark: SparkSession, config: ClickrecConfig, valid: DataFrame, valid_rows: int,
    run_id: str, now: datetime, staging: str,
) -> dict[str, int]:
    """Accepted events -> bronze/events (new event_ids only) -> silver for the affected users."""
    from pyspark.sql import functions as F

    from clickrec.transforms.clickstream import events_to_interactions

    if valid_rows == 0:
        return {"accepted": 0, "duplicates": 0}
    bronze = delta.table_path(config, C.BRONZE_EVENTS)
    bronze_existed = delta.table_exists(spark, bronze)
    candidates = valid.dropDuplicates([C.EVENT_ID])
    if bronze_existed:
        known = delta.read_table(spark, bronze).select(C.EVENT_ID)
        candidates = candidates.join(known, on=C.EVENT_ID, how="left_anti")
    new_events = candidates.select(
        *[c for c in BRONZE_COLUMNS if c not in (C.INGEST_RUN_ID, C.INGESTED_AT)],
        F.lit(run_id).alias(C.INGEST_RUN_ID),
        F.lit(now).cast("timestamp").alias(C.INGESTED_AT),
    )
    new_events = new_events.repartition(C.EVENT_DATE)
    if not bronze_existed:
        # First write: there are valid rows, so never an empty commit; its metrics count them.
        delta.append(new_events, bronze, partition_by=[C.EVENT_DATE])
        accepted = int(delta.last_operation_metrics(spark, bronze).get("numOutputRows", 0))
        events = delta.read_table(spark, bronze)
    else:
        # Deduplicate once into scratch Parquet, count it from file metadata, and commit only
        # when something is new (a rerun leaves bronze's version alone).
        new_path = f"{staging}/new_events"
        new_events.write.mode("overwrite").parquet(new_path)
        staged_new = spark.read.parquet(new_path)
        accepted = int(staged_new.count())
        if accepted:
            delta.append(staged_new, bronze, partition_by=[C.EVENT_DATE])
        # Recompute every user of the batch (not only those with new events): after a job
        # killed between bronze and silver, the rerun finds no new events but repairs silver.
        affected = valid.select(C.USER_ID).distinct()
        events = delta.read_table(spark, bronze).join(affected, on=C.USER_ID, how="left_semi")
    log.info("bronze/events: %d accepted, %d duplicates", accepted, valid_rows - accepted)
    ic = config.ingest
    interactions = events.transform(
        events_to_interactions,
        cap_seconds=ic.dwell_cap_seconds,
        last_view_seconds=ic.last_view_dwell_seconds,
        rating=ic.rating.model_dump(),
    )
    silver = _update_silver(spark, config, interactions, staging)
    return {"accepted": accepted, "duplicates": valid_rows - accepted, **silver}


def _ingest_valid_ratings(
    spark: SparkSession, config: ClickrecConfig, valid: DataFrame, valid_rows: int, staging: str
) -> dict[str, int]:
    """Accepted explicit ratings -> silver directly; accepted = (user, item) rows that changed."""
    from clickrec.transforms.clickstream import ratings_to_interactions

    if valid_rows == 0:
        return {"accepted": 0, "duplicates": 0}
    silver = _update_silver(spark, config, valid.transform(ratings_to_interactions), staging)
    accepted = silver["interactions_changed"]
    return {"accepted": accepted, "duplicates": valid_rows - accepted, **silver}


def recompute_interactions(spark: SparkSession, config: ClickrecConfig) -> DataFrame:
    """silver/interactions as a full recompute over all of bronze/events would give it.

    Uses the same transformations and the index tables; tests compare it with the
    incrementally maintained table.
    """
    from clickrec.transforms.clickstream import events_to_interactions
    from clickrec.transforms.index import attach_ids

    ic = config.ingest
    inter = delta.read_table(spark, delta.table_path(config, C.BRONZE_EVENTS)).transform(
        events_to_interactions,
        cap_seconds=ic.dwell_cap_seconds,
        last_view_seconds=ic.last_view_dwell_seconds,
        rating=ic.rating.model_dump(),
    )
    return attach_ids(
        inter,
        delta.read_table(spark, delta.table_path(config, C.SILVER_USER_INDEX)),
        delta.read_table(spark, delta.table_path(config, C.SILVER_ITEM_INDEX)),
    ).select(*SILVER_COLUMNS)
