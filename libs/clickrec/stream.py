"""`clickrec stream`: one Structured Streaming query keeps bronze, silver and gold fresh from Kafka.

The named query reads kafka.clickstream_topic and stages each record with batch ingest's own
parser and checks (`staged_events`, clickrec.staging.stage_event_lines over the JSON values);
each micro-batch goes to clickrec.microbatch.BatchProcessor (foreachBatch, safe to run twice),
which updates bronze, silver and gold. The query's checkpoint lives under the lake
(`_checkpoints/stream/<query_name>`), so a restarted driver resumes at the last committed
micro-batch. It runs until the topic is drained (available now), a time limit, or SIGTERM, which
lets the running batch finish (`run_stream`); a failed query ends the command with the batch's
own error (`_query_failure`).

Progress (input and processing rates, batch duration, offsets behind latest) comes from a
StreamingQueryListener into the log and `<lake>/_metrics/stream/<query_name>.json`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import LeaseWaitStopped, NotFoundError, ServiceError, first_line
from clickrec.io import leases
from clickrec.io.lake import Lake
from clickrec.microbatch import BatchProcessor
from clickrec.staging import stage_event_lines, suite_params
from clickrec.tracking import Tracking

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


def checkpoint_path(config: ClickrecConfig) -> str:
    """The query's own checkpoint, under the lake so it travels with the tables it protects."""
    return Lake.from_config(config).path(f"_checkpoints/stream/{config.stream.query_name}")


def metrics_path(config: ClickrecConfig) -> str:
    """The JSON file the listener keeps the latest progress in (for monitoring)."""
    return Lake.from_config(config).path(f"_metrics/stream/{config.stream.query_name}.json")


def staged_events(kafka_df: DataFrame, config: ClickrecConfig) -> DataFrame:
    """Kafka records -> batch ingest's staged rows (stage_event_lines over the JSON values).

    Applied to the streaming DataFrame once, when the query starts, so that a micro-batch
    arrives parsed and flagged without rebuilding the plan (hundreds of py4j calls) each time.
    """
    from pyspark.sql import functions as F

    from clickrec.quality import load_suite

    lines = kafka_df.select(
        F.col("value").cast("string").alias(C.VALUE),
        F.format_string("kafka://%s/%d/%d", F.col("topic"), F.col("partition"), F.col("offset")).alias(C.SOURCE_FILE),
    )
    suite = load_suite(config.ingest.events_suite, suite_params(config))
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
    tracking: Tracking | None = None,
) -> dict[str, Any]:
    """Run the refresh query until the topic is drained (available_now), max_seconds pass, or SIGTERM.

    Returns the summary: batches and rows processed, users refreshed, model version, paths and
    table versions. Raises ServiceError without Kafka; when the query fails, what
    `_query_failure` says (the batch's own error, or ServiceError for Spark and storage; the
    checkpoint keeps the last committed batch). `tracking`: the job's MLflow (default: one built
    from config.mlflow with the stream's tighter HTTP timeout and retries). The CLI refuses
    available_now together with max_seconds.
    """
    from pyspark.errors import StreamingQueryException

    from clickrec.io.kafka import ensure_topic, stream_source_options

    sc = config.stream
    options = stream_source_options(
        config.kafka, topic=config.kafka.clickstream_topic, starting_offsets=sc.starting_offsets,
        max_offsets_per_trigger=sc.max_offsets_per_trigger, fail_on_data_loss=sc.fail_on_data_loss,
    )
    if ensure_topic(config.kafka, config.kafka.clickstream_topic):
        log.info("created topic %s", config.kafka.clickstream_topic)
    started = time.monotonic()
    stop = threading.Event()
    processor = BatchProcessor(spark, config, tracking or Tracking(config.mlflow, stream=True), stop=stop)
    try:
        processor.refresh_model()
    except NotFoundError:
        log.warning("no model holds alias %s: bronze and silver only until one does", sc.variant)
    listener = _listener_class()(sc.query_name, metrics_path(config))
    spark.streams.addListener(listener)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    query = None
    heartbeat = ExitStack()  # the stream's lease on heartbeat_resource while it runs (clickrec.io.leases)
    try:
        heartbeat.enter_context(leases.hold(processor.lake, leases.heartbeat_resource(sc.query_name),
                                            owner=f"stream-{sc.query_name}@{socket.gethostname()}-{os.getpid()}"))
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
        if stop.is_set():
            reason = "sigterm"
        error = query.exception()
        if error is not None and not _stopped_waiting(processor):
            raise _query_failure(sc.query_name, processor, error)
    except StreamingQueryException as exc:
        if not _stopped_waiting(processor):
            raise _query_failure(sc.query_name, processor, exc) from exc
    finally:
        if query is not None and query.isActive:
            query.stop()
        spark.streams.removeListener(listener)
        heartbeat.close()
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
        "tables": {t: processor.lake.version(spark, t)
                   for t in (C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.GOLD_RECOMMENDATIONS)},
        "seconds": round(time.monotonic() - started, 1),
    }


def _stopped_waiting(processor: BatchProcessor) -> bool:
    """The batch ended because SIGTERM cut its wait for a lease: a stop, not a failure (the
    batch is replayed from the checkpoint on the next start)."""
    return isinstance(processor.error, LeaseWaitStopped)


def _query_failure(query_name: str, processor: BatchProcessor, error: Any) -> Exception:
    """The error a failed query ends the command with, classified as the CLI classifies a batch
    job's: the batch's own ClickrecError keeps its exit code; a store's I/O failure behind it
    (S3A, Delta, delta-rs: clickrec.io.failures) is a ServiceError naming the store (exit 4);
    another error of the batch is a bug (exit 1 with its traceback); and a query that failed
    outside the batch (Kafka, the checkpoint's storage; bad rows never fail a batch) is a
    ServiceError."""
    from py4j.protocol import Py4JError, Py4JJavaError

    from clickrec.errors import ClickrecError
    from clickrec.io.failures import storage_error

    failed = processor.error
    if isinstance(failed, ClickrecError):
        return failed
    if isinstance(failed, Py4JError) and not isinstance(failed, Py4JJavaError):  # the JVM went away
        return ServiceError(f"stream {query_name} failed: Spark's JVM: {first_line(failed)}")
    storage = storage_error(failed if failed is not None else error)
    if storage is not None:
        return ServiceError(f"stream {query_name} failed: {storage}")
    if failed is None:
        return ServiceError(f"stream {query_name} failed: {first_line(error)}")
    return failed


def _stop_gracefully(query: Any, timeout: float) -> None:
    """Let a running micro-batch finish (bounded), then stop; a cut batch would be redone anyway."""
    deadline = time.monotonic() + timeout
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
