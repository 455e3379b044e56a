"""Faults on the real MinIO: an ingest SIGKILLed between its bronze and silver commits, and
the store down for 10 s under the ingest that repairs it and under a stream batch.

The lake is in a MinIO server of the module's own (and a bucket of its own, so that the test
process's cached s3a filesystem for it points at this server). It is stopped and started again
on the same port, data folder and keys, so clients see refused connections while it is down,
as when MinIO is stopped (StoppableMinio).

One lake for the module, fed disjoint parts of one generated clickstream (users and sessions
span the parts); the tests run in file order, each checking all that was fed so far. A job
that meets the outage must ride it out (exit 0) or fail with ServiceError's exit code 4, and
never leave a table half written: bronze holds each event once throughout, and once the job
is rerun, bronze holds every event fed so far and silver equals a full recompute from bronze
(clickrec.ingest.recompute_interactions).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.generate import generate_clickstream
from clickrec.ingest import ingest, recompute_interactions
from clickrec.io import leases
from clickrec.io.lake import Lake
from clickrec.replay import replay
from clickrec.services import ServiceProcess
from clickrec.spark import apply_s3a
from clickrec.stream import run_stream
from tests.support.cli import kill_group, run_cli, start_cli
from tests.support.config import make_config, write_config_file
from tests.support.services import StoppableMinio
from tests.support.stream import assert_same

pytestmark = pytest.mark.slow  # two `clickrec` processes with their own JVMs, two 10 s outages

BUCKET = "faults"
OUTAGE_S = 10.0
# The inputs: the killed ingest's file, then a folder of it and a new file, then the stream's.
KILLED, NEW, STREAMED = "batch/killed.csv", "batch/new.csv", "stream.csv"
PARTS = {KILLED: 600, NEW: 400, STREAMED: 500}  # events of each
STREAM_BATCH = 100  # Kafka records per micro-batch: the outage lands inside a run of several
START_TIMEOUT_S = 300.0  # a JVM start and the job's first steps on a loaded 2-core machine
# A job facing a 10 s outage must end (retried or failed) well within this; S3A retries a
# refused connection for about two minutes per call before it gives up.
JOB_TIMEOUT_S = 420.0
OK_OR_SERVICE_ERROR = (0, 4)  # rode the outage out, or failed with ServiceError's exit code


# --- the module's MinIO, lake and inputs ---------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppableMinio]:
    minio = StoppableMinio(tmp_path_factory.mktemp("faults-minio"), BUCKET)
    with pytest.MonkeyPatch.context() as env:  # the keys, as `services.env` puts them in a shell
        for key, value in minio.service.env.items():
            env.setenv(key, value)
        yield minio
    minio.stop()


class World:
    """The module's lake on MinIO, its config (file) and inputs, and what was fed to it."""

    def __init__(self, spark: SparkSession, store: StoppableMinio, tmp: Path) -> None:
        self.store, self.tmp = store, tmp
        self.prefix = f"lake-{uuid.uuid4().hex[:8]}"
        self.config = self.lake_config()
        apply_s3a(spark, self.config.s3)  # the test run's one session, pointed at this MinIO
        self.config_file = write_config_file(self.config, tmp / "faults.yaml")
        self.lake = Lake.from_config(self.config)
        self.inputs = split_rows(tmp / "all.csv", PARTS)
        self.fed: list[Path] = []  # inputs a job has been given, so far

    def lake_config(self, **sections: dict[str, Any]) -> ClickrecConfig:
        return make_config(
            self.tmp, lake={"root": f"s3a://{BUCKET}/{self.prefix}"}, s3={"endpoint": self.store.service.url},
            ingest={"data_docs": False},
            spark={"driver_memory": "1g", "conf": {"spark.ui.showConsoleProgress": "false"}}, **sections,
        )

    def commits(self, table: str) -> int:
        """How many commits `table` has, counted on MinIO (cheap enough to poll)."""
        return self.store.delta_versions(f"{self.prefix}/{table}")

    def bronze_runs(self) -> list[str]:
        """The run id of each bronze row (read by delta-rs: no Spark job)."""
        dt = self.lake.open(C.BRONZE_EVENTS)
        return [] if dt is None else dt.to_pyarrow_table(columns=[C.INGEST_RUN_ID]).column(0).to_pylist()


@pytest.fixture(scope="module")
def world(spark: SparkSession, store: StoppableMinio, tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(spark, store, tmp_path_factory.mktemp("faults"))


def split_rows(source: Path, parts: dict[str, int]) -> dict[str, Path]:
    """Generate sum(parts) events at `source` and cut them, in order, into one CSV per part
    (at that path, relative to `source`'s folder)."""
    generate_clickstream(source, events=sum(parts.values()), seed=17)
    header, *rows = source.read_text().splitlines(keepends=True)
    files, start = {}, 0
    for name, count in parts.items():
        files[name] = source.parent / name
        files[name].parent.mkdir(exist_ok=True)
        files[name].write_text(header + "".join(rows[start:start + count]))
        start += count
    return files


# --- what every fault must leave ---------------------------------------------------------------


def staged_ids(spark: SparkSession, config: ClickrecConfig, paths: Sequence[Path]) -> DataFrame:
    """The event ids of the inputs' accepted rows, staged as ingest and the stream stage them."""
    from clickrec.io.files import list_input_files
    from clickrec.quality import load_suite
    from clickrec.staging import stage_events, suite_params

    files = [f for p in paths for f in list_input_files(spark, str(p))]
    suite = load_suite(config.ingest.events_suite, suite_params(config))
    staged = stage_events(spark, config, files, suite)
    return staged.where(F.size(C.REASONS) == 0).select(C.EVENT_ID).distinct()


def assert_each_event_once(world: World) -> None:
    dt = world.lake.open(C.BRONZE_EVENTS)
    assert dt is not None
    ids = dt.to_pyarrow_table(columns=[C.EVENT_ID]).column(0).to_pylist()
    rows, events = len(ids), len(set(ids))
    assert rows == events > 0, f"bronze holds {rows} rows of {events} events"


def assert_lake_holds_what_was_fed(spark: SparkSession, world: World) -> None:
    """Bronze: every accepted event fed so far, once; silver: a full recompute from bronze."""
    assert_each_event_once(world)
    assert_same(world.lake.read(spark, C.BRONZE_EVENTS).select(C.EVENT_ID),
                staged_ids(spark, world.config, world.fed))
    assert_same(world.lake.read(spark, C.SILVER_INTERACTIONS), recompute_interactions(spark, world.config))


# --- running a job into a fault ----------------------------------------------------------------


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.is_file() else "(no log)"


def run_until(proc: subprocess.Popen[bytes], log: Path, reached: Callable[[], bool], what: str) -> None:
    """Wait until `reached()` while `proc` runs; fail if it ends or times out first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while proc.poll() is None and not reached() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the job ended ({proc.returncode}) before {what}: {log_tail(log)}"
    assert reached(), f"no {what} within {START_TIMEOUT_S:.0f} s: {log_tail(log)}"


def outage_once(store: StoppableMinio, reached: Callable[[], bool], done: threading.Event
                ) -> Future[tuple[float, float] | None]:
    """In the background: MinIO down for OUTAGE_S as soon as `reached()`, unless `done` comes
    first. The future's result: (seconds it was down, time.monotonic() when it was back), or
    None when it never went down."""

    def run() -> tuple[float, float] | None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not done.is_set() and time.monotonic() < deadline:
            if reached():
                return store.down_for(OUTAGE_S), time.monotonic()
            time.sleep(0.05)
        return None

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outage")
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


def summary_of(out: str) -> dict[str, Any]:
    """The JSON summary that ends a command's stdout."""
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


# --- the faults --------------------------------------------------------------------------------


def test_an_ingest_sigkilled_before_silver_then_minio_down_10s_under_the_repairing_ingest(
    spark: SparkSession, world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. `clickrec ingest` SIGKILLed right after its bronze commit, before its silver commit.
    killed, log = world.inputs[KILLED], world.tmp / "killed.log"
    bronze_before, silver_before = world.commits(C.BRONZE_EVENTS), world.commits(C.SILVER_INTERACTIONS)
    runs_before = set(world.bronze_runs())
    proc = start_cli(["ingest", "--config", str(world.config_file), "--input", str(killed)], log)
    world.fed.append(killed)
    run_until(proc, log, lambda: world.commits(C.BRONZE_EVENTS) > bronze_before, "its bronze commit")
    kill_group(proc)
    assert world.commits(C.BRONZE_EVENTS) == bronze_before + 1
    assert world.commits(C.SILVER_INTERACTIONS) == silver_before, "the kill came after the silver commit"
    assert len(set(world.bronze_runs()) - runs_before) == 1  # the killed run's events are in bronze
    assert_each_event_once(world)

    # 2. The next ingest, of the killed input and a new one (its users recomputed with the
    # batch's), while MinIO is down for 10 s from the moment it takes its leases, right
    # before it writes bronze: it inserts the new events and repairs silver, or exits 4.
    folder = str(killed.parent)
    leases_before = world.commits(leases.LEASES)
    done = threading.Event()
    outage = outage_once(world.store, lambda: world.commits(leases.LEASES) > leases_before, done)
    try:
        result = run_cli(["ingest", "--config", str(world.config_file), "--input", folder], capsys)
    finally:
        done.set()
    ended = time.monotonic()
    world.fed.append(world.inputs[NEW])
    went_down = outage.result()
    assert went_down is not None, f"the ingest ended before MinIO went down: {result.stderr[-3000:]}"
    down, back = went_down
    assert result.returncode in OK_OR_SERVICE_ERROR, f"exit {result.returncode}: {result.stderr[-3000:]}"
    assert ended - back < JOB_TIMEOUT_S, f"the ingest ran {ended - back:.0f} s after the outage"
    assert_each_event_once(world)
    summary = summary_of(result.stdout)
    assert summary["ok"] is (result.returncode == 0)

    # 3. Its rerun: nothing left to do after a success; after exit 4 it finishes the job.
    rerun = ingest(spark, world.config, input_path=folder)
    if result.returncode == 0:
        assert rerun["accepted"] == 0 and rerun["interactions_changed"] == 0
    assert_lake_holds_what_was_fed(spark, world)
    print(f"ingest with MinIO down {down:.1f} s: exit {result.returncode}, ended {ended - back:.0f} s after it came back")


def test_minio_down_for_10s_during_a_stream_batch(
    spark: SparkSession, world: World, kafka_service: ServiceProcess
) -> None:
    data, log = world.inputs[STREAMED], world.tmp / "stream.log"
    config = world.lake_config(
        kafka={"bootstrap_servers": kafka_service.url, "clickstream_topic": f"faults-{uuid.uuid4().hex[:8]}"},
        stream={"max_offsets_per_trigger": STREAM_BATCH, "trigger_seconds": 0.2, "query_name": "faults"},
    )
    config_file = write_config_file(config, world.tmp / "faults-stream.yaml")
    sent = replay(config, input_path=str(data), rate=0)["sent"]
    world.fed.append(data)
    assert sent == PARTS[STREAMED]
    bronze_before = world.commits(C.BRONZE_EVENTS)
    proc = start_cli(["stream", "--config", str(config_file), "--available-now"], log)
    # The outage starts with the first micro-batch's bronze commit: the rest of that batch
    # (silver, the checkpoint) and the next batches meet it.
    run_until(proc, log, lambda: world.commits(C.BRONZE_EVENTS) > bronze_before, "its first bronze commit")
    down = world.store.down_for(OUTAGE_S)
    back = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"the stream still ran {JOB_TIMEOUT_S:.0f} s after the outage: {log_tail(log)}") from None
    seconds = time.monotonic() - back
    assert proc.returncode in OK_OR_SERVICE_ERROR, f"exit {proc.returncode}: {log_tail(log)}"
    assert_each_event_once(world)
    summary = summary_of(out.decode())
    if proc.returncode == 0:
        assert summary["ok"] is True and summary["stop_reason"] == "drained" and summary["rows_read"] == sent

    restarted = run_stream(spark, config, available_now=True)  # from its checkpoint on MinIO
    if proc.returncode == 0:
        assert restarted["rows_read"] == 0  # nothing was left to do
    assert_lake_holds_what_was_fed(spark, world)
    print(f"stream with MinIO down {down:.1f} s: exit {proc.returncode}, ended {seconds:.0f} s after it came back")
