"""Writer leases: a batch job's lease holds the stream's commits to that table until it ends."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.errors import LeaseWaitStopped, LeaseWaitTimeoutError, SingleWriterError
from clickrec.generate import generate_clickstream
from clickrec.ingest import ingest
from clickrec.io import leases
from clickrec.io.delta import table_version
from clickrec.io.lake import Lake
from clickrec.microbatch import BatchProcessor
from clickrec.status import collect_status
from clickrec.stream import staged_events
from tests.support.config import make_config


def test_a_lease_is_live_while_held_and_an_expired_one_is_ignored(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    lake = Lake.from_config(config)
    assert leases.live(lake, ("t",)) == []  # no table yet
    waited: list[float] = []
    with leases.hold(lake, "t", owner="job-1"), leases.hold(lake, C.SILVER_INTERACTIONS, owner="job-2"):
        assert [r["owner"] for r in leases.live(lake, ("t",))] == ["job-1"]
        shown = collect_status(config)["leases"]  # what `clickrec status` prints
        assert [(r["resource"], r["owner"]) for r in shown] == [(C.SILVER_INTERACTIONS, "job-2")]
        assert leases.live(lake, ("other",)) == []
        waiter = threading.Thread(target=lambda: waited.append(leases.wait_until_free(lake, ("t",), poll=0.1)))
        waiter.start()
        time.sleep(1.0)
        assert waiter.is_alive()  # still waiting for the holder
    waiter.join(timeout=10)
    assert waited and waited[0] >= 0.9
    assert leases.live(lake, ("t",)) == []  # removed at the end of the block

    # A holder that died leaves its row; once `until` has passed nobody waits for it.
    leases._put(lake, "t", "dead-job", leases._now() - timedelta(seconds=1))
    assert leases.live(lake, ("t",)) == []
    assert leases.wait_until_free(lake, ("t",), poll=0.1) < 0.1



def test_a_kept_lease_view_sees_leases_come_and_go(tmp_path: Path) -> None:
    """The stream's view opens the table once and follows its later commits."""
    config = make_config(tmp_path)
    lake = Lake.from_config(config)
    view = leases.LeaseView(lake)
    assert view.live(("t",)) == []  # no table yet: opened later, on a later call
    with leases.hold(lake, "t", owner="job-1"):
        assert [r["owner"] for r in view.live(("t",))] == ["job-1"]
        with leases.hold(lake, "t", owner="job-2"):
            assert sorted(r["owner"] for r in view.live(("t",))) == ["job-1", "job-2"]
        assert [r["owner"] for r in view.live(("t", "u"))] == ["job-1"]
    assert view.live(("t",)) == []
    assert view.wait_until_free(("t",), poll=0.1) < 0.1

def test_a_stream_batch_holds_its_silver_commit_while_ingest_holds_the_lease(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = make_config(tmp_path, ingest={"data_docs": False})
    lake = Lake.from_config(config)
    generate_clickstream(tmp_path / "first.csv", events=600, seed=3)
    ingest(spark, config, input_path=str(tmp_path / "first.csv"))
    generate_clickstream(tmp_path / "later.jsonl", events=50, seed=4)
    lines = (tmp_path / "later.jsonl").read_text().splitlines()
    kafka_df = spark.createDataFrame(
        [(line.encode(), "clicks", 0, n) for n, line in enumerate(lines)],
        "value binary, topic string, partition int, offset long",
    )
    staged = staged_events(kafka_df, config)
    silver = lake.path(C.SILVER_INTERACTIONS)
    before = table_version(spark, silver)
    done: list[BaseException | None] = []

    def micro_batch() -> None:
        try:
            BatchProcessor(spark, config)(staged, 0)
            done.append(None)
        except BaseException as exc:  # reported by the assertion below
            done.append(exc)

    bronze_before = lake.open(C.BRONZE_EVENTS).version()  # type: ignore[union-attr]
    with leases.hold(lake, C.SILVER_INTERACTIONS, owner="ingest-test"):
        batch = threading.Thread(target=micro_batch)
        batch.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and lake.open(C.BRONZE_EVENTS).version() == bronze_before:  # type: ignore[union-attr]
            time.sleep(0.2)
        assert lake.open(C.BRONZE_EVENTS).version() == bronze_before + 1  # type: ignore[union-attr]
        time.sleep(3.0)  # bronze is not held; silver, a second later in the batch, is
        assert batch.is_alive() and table_version(spark, silver) == before
    batch.join(timeout=120)
    assert done == [None]
    assert table_version(spark, silver) == (before or 0) + 1  # silver written once the lease was gone


def test_a_ratings_ingest_holds_the_silver_lease_while_it_writes(spark: SparkSession, tmp_path: Path) -> None:
    """The ratings path writes silver straight away, so it asks the stream to wait too."""
    from deltalake import DeltaTable

    config = make_config(tmp_path, ingest={"data_docs": False})
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n1\t11\t3\t881250950\n2\t10\t5\t881250951\n")
    summary = ingest(spark, config, input_path=str(tmp_path / "u.data"), input_format="ratings")
    assert summary["interactions"] == 3
    table = DeltaTable(str(tmp_path / "lake" / leases.LEASES))
    held = DeltaTable(table.table_uri, version=table.version() - 1).to_pyarrow_table().to_pylist()  # before the drop
    assert [(r["resource"], r["owner"]) for r in held] == [(C.SILVER_INTERACTIONS, f"ingest-{summary['run_id']}")]
    assert leases.live(Lake.from_config(config), (C.SILVER_INTERACTIONS,)) == []


def test_a_wait_gives_up_after_its_timeout_naming_the_holder_and_ends_when_told_to_stop(tmp_path: Path) -> None:
    lake = Lake.from_config(make_config(tmp_path))
    with leases.hold(lake, "t", owner="ingest-run-1"):
        with pytest.raises(LeaseWaitTimeoutError) as timed_out:
            leases.wait_until_free(lake, ("t", "u"), timeout=0.5, poll=0.1)
        assert timed_out.value.exit_code == 4
        assert "ingest-run-1" in str(timed_out.value) and timed_out.value.resources == ["t"]
        assert timed_out.value.waited_seconds >= 0.5

        stop = threading.Event()
        stopped: list[BaseException] = []

        def wait() -> None:
            try:
                leases.wait_until_free(lake, ("t",), stop=stop, poll=30.0)  # a poll far longer than the test
            except LeaseWaitStopped as exc:
                stopped.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)
        started = time.monotonic()
        stop.set()  # what the stream's SIGTERM handler does
        waiter.join(timeout=10)
        assert stopped and time.monotonic() - started < 5


def test_single_writer_mode_refuses_a_batch_job_while_a_stream_heartbeat_is_live(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = make_config(tmp_path, ingest={"data_docs": False}, s3={"commit": "single_writer"})
    lake = Lake.from_config(config)
    generate_clickstream(tmp_path / "events.csv", events=200, seed=5)
    with leases.hold(lake, leases.heartbeat_resource("clicks"), owner="stream-clicks@host-1"):
        assert [r["owner"] for r in collect_status(config)["live_streams"]] == ["stream-clicks@host-1"]
        with pytest.raises(SingleWriterError) as refused:
            ingest(spark, config, input_path=str(tmp_path / "events.csv"))
        assert refused.value.exit_code == 6
        assert "stream-clicks@host-1" in str(refused.value) and "single_writer" in str(refused.value)
        assert lake.open(C.BRONZE_EVENTS) is None  # refused before writing anything
        # with conditional puts the two write together
        leases.refuse_beside_stream(lake, "ingest", commit="conditional_put")
    leases.refuse_beside_stream(lake, "ingest", commit="single_writer")  # heartbeat gone: allowed
