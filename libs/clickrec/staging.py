"""Raw lines -> staged rows, shared by `clickrec ingest` and `clickrec stream`.

Staging parses text lines (CSV, JSON lines or ratings), maps them to the canonical columns,
types them, flags every failing expectation (clickrec.quality) in `reasons` and hashes the
event_id, without writing anything: batch ingest stages files (`stage_events`,
`stage_ratings`), the stream stages Kafka values with the same function (`stage_event_lines`),
so both paths accept, reject and identify an event the same way. Rejected rows are appended to
bronze/quarantine by `quarantine_rejected`, which both paths call.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError
from clickrec.io import delta
from clickrec.io.files import InputFile
from clickrec.io.lake import Lake
from clickrec.quality import rejection_checks

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")


def detect_file_format(config: ClickrecConfig, files: Sequence[InputFile]) -> str:
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


def read_lines(spark: SparkSession, files: Sequence[InputFile]) -> DataFrame:
    """Every line of every file as text (bytes kept as read), with its source file."""
    from pyspark.sql import functions as F

    return spark.read.text([f.path for f in files]).select(
        F.col(C.VALUE), F.col("_metadata.file_path").alias(C.SOURCE_FILE)
    )


def suite_params(config: ClickrecConfig) -> dict[str, Any]:
    """The parameters of the expectation suites (clickrec.quality.load_suite) from ingest config."""
    ic = config.ingest
    return {
        "column_count": len(ic.source_columns),
        "event_time_min": ic.event_time_min,
        "event_time_max": ic.event_time_max,
    }


def stage_events(spark: SparkSession, config: ClickrecConfig, files: Sequence[InputFile], suite: dict[str, Any]) -> DataFrame:
    """Raw clickstream lines -> typed, flagged, hashed rows (not yet written)."""
    return stage_event_lines(read_lines(spark, files), config, file_format=detect_file_format(config, files), suite=suite)


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
            unquoted = F.trim(F.translate(F.col(C.VALUE), '"', ""))
            # The cheap test first: only lines holding the first column's name are unquoted
            # and compared (translate on every line was a quarter of the parse's CPU time).
            is_header = F.contains(F.col(C.VALUE), F.lit(ic.source_columns[0])) & (unquoted == F.lit(header))
            lines = lines.where(~is_header)
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
        parsed.transform(T.to_canonical, column_mapping=ic.column_mapping, constants=ic.constants, keep=keep)
        .transform(T.type_events, time_formats=ic.event_time_formats, event_type_values=ic.event_type_values)
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

    delimiter = config.ingest.ratings_delimiter
    lines = read_lines(spark, files).where(~T.is_ratings_header(F.col(C.VALUE), delimiter_regex=delimiter))
    return (
        lines.transform(T.parse_ratings_lines, delimiter_regex=delimiter)
        .transform(T.flag_rejections, checks=rejection_checks(suite))
        .withColumn(
            C.RAW_LINE,
            F.when(F.size(C.REASONS) > 0, F.make_valid_utf8(F.col(C.VALUE))),
        )
        .drop(C.VALUE)
    )


def count_batch(staged: DataFrame) -> tuple[int, int, dict[str, int]]:
    """(rows, rejected rows, rejected rows per reason) of a staged batch.

    One aggregation: rejected rows grouped by their whole reasons array (few distinct
    combinations), from which the total and the per-reason counts (a row with two reasons
    counts under each, as exploding the arrays would) are summed on the driver. On a Parquet
    batch it reads only the reasons column.
    """
    from pyspark.sql import functions as F

    rows = int(staged.count())
    combos = (
        staged.where(F.size(C.REASONS) > 0).groupBy(C.REASONS).count().collect()
    )
    rejected = 0
    counts: dict[str, int] = {}
    for r in combos:
        n = int(r["count"])
        rejected += n
        for reason in r[C.REASONS]:
            counts[reason] = counts.get(reason, 0) + n
    return rows, rejected, dict(sorted(counts.items()))


def quarantine_rejected(spark: SparkSession, lake: Lake, staged: DataFrame, *, fmt: str, input_key: str,
                        run_id: str, now: datetime, txn_version: int | None = 1, skip_held: bool = False) -> None:
    """Append the batch's rejected rows to bronze/quarantine once per (input_key, txn_version).

    `skip_held`: leave out the rows bronze/quarantine already holds from the same source file,
    so ingesting a landing folder again after a file was added (another input_key) does not
    write the older files' rejected rows twice. `txn_version=None` (the stream) appends without
    Delta's (app id, version) guard and relies on `skip_held` alone: its rows name their Kafka
    offset, and after a checkpoint reset batch ids restart at 0, so the guard would skip new
    rows whose batch id it has seen.
    """
    from pyspark.sql import functions as F

    rejected = staged.where(F.size(C.REASONS) > 0).select(
        C.RAW_LINE, C.REASONS, C.SOURCE_FILE,
        F.lit(fmt).alias(C.INPUT_FORMAT),
        F.lit(run_id).alias(C.INGEST_RUN_ID),
        F.lit(now).cast("timestamp").alias(C.INGESTED_AT),
    )
    if skip_held:
        rejected = _not_yet_quarantined(spark, lake, rejected)
    path = lake.path(C.BRONZE_QUARANTINE)
    if txn_version is None:
        if not skip_held:
            raise ValueError("an unguarded quarantine append needs skip_held, or a rerun doubles it")
        delta.append(path, rejected.select(*C.QUARANTINE_COLUMNS))
        return
    delta.append_once(path, rejected.select(*C.QUARANTINE_COLUMNS),
                      app_id=f"clickrec-ingest-quarantine-{input_key[:40]}", version=txn_version)


def _not_yet_quarantined(spark: SparkSession, lake: Lake, rejected: DataFrame) -> DataFrame:
    """Rejected rows beyond the copies of the same (source file, raw line) quarantine holds.

    Counted per line, not deduplicated: a file with the same bad line twice keeps both rows.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not lake.exists(spark, C.BRONZE_QUARANTINE):
        return rejected
    keys = [C.SOURCE_FILE, C.RAW_LINE]
    held = (
        lake.read(spark, C.BRONZE_QUARANTINE)
        .join(rejected.select(C.SOURCE_FILE).distinct(), on=C.SOURCE_FILE, how="left_semi")
        .groupBy(*keys).agg(F.count(F.lit(1)).alias("_held"))
    )
    copy = F.row_number().over(Window.partitionBy(*keys).orderBy(C.RAW_LINE))
    return (
        rejected.withColumn("_copy", copy)
        .join(held, on=keys, how="left")
        .where(F.col("_copy") > F.coalesce(F.col("_held"), F.lit(0)))
        .select(*rejected.columns)
    )
