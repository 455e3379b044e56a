"""Exactly once with the real broker: SIGKILL `clickrec stream` mid-flight, restart, converge.

Events are replayed to Kafka while the stream runs as a real `clickrec stream` process; twice
the process group is SIGKILLed at a seeded random moment 3-20 s after its query started (a
micro-batch takes one to a few seconds here, so the kill lands inside a batch, new or the rerun
of the one cut before, or between batches), and restarted from its checkpoint.
A last `--available-now` run drains the topic. Then bronze holds every event exactly once,
silver equals batch ingest of the same file, and gold has one row per (user, variant).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.generate import generate_clickstream
from clickrec.ingest import ingest
from clickrec.io.lake import Lake
from clickrec.replay import replay
from clickrec.services import ServiceProcess
from clickrec.stream import checkpoint_path
from tests.support.cli import kill_group
from tests.support.config import REPO_ROOT, make_config, write_config_file
from tests.support.models import register_model
from tests.support.stream import assert_ids_match_index, assert_same, silver_values, split_csv

KILLS = 2  # the second kill can land in the rerun of the batch the first one cut
START_TIMEOUT_S = 240.0  # a JVM start plus a first micro-batch on a loaded 2-core machine
DRAIN_TIMEOUT_S = 600.0


def query_starts(log: Path) -> int:
    """How many times a stream process logged that its query started."""
    return log.read_text(errors="replace").count("stream kill-test from topic") if log.is_file() else 0


def start_stream(config_file: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "clickrec.cli", "stream", "--config", str(config_file), *extra],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log.open("ab"), start_new_session=True,
    )


def test_sigkilled_stream_converges_to_exactly_once(spark: SparkSession, kafka_service: ServiceProcess, tmp_path: Path) -> None:
    rng = random.Random(20261130)
    topic = f"clickstream-{uuid.uuid4().hex[:8]}"
    config = make_config(
        tmp_path / "stream", kafka={"bootstrap_servers": kafka_service.url, "clickstream_topic": topic},
        stream={"max_offsets_per_trigger": 500, "trigger_seconds": 0.5, "query_name": "kill-test"},
        ingest={"data_docs": False},
        spark={"driver_memory": "1g", "conf": {"spark.ui.showConsoleProgress": "false"}},
    )
    source, first, second = tmp_path / "all.csv", tmp_path / "first.csv", tmp_path / "second.csv"
    generate_clickstream(source, events=2000, seed=9)
    _, streamed = split_csv(source, first, second, 0.3)
    ingest(spark, config, input_path=str(first))
    register_model(spark, config, max_iter=5)
    config_file = write_config_file(config, tmp_path / "stream.yaml")
    checkpoint = Path(checkpoint_path(config))
    assert not checkpoint.exists()
    log = tmp_path / "stream.log"

    sent: dict[str, object] = {}
    sender = threading.Thread(target=lambda: sent.update(replay(config, input_path=str(second), rate=150)))
    sender.start()
    try:
        for _ in range(KILLS):
            proc = start_stream(config_file, log, "--max-seconds", "900")
            before = query_starts(log)
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None and query_starts(log) == before:
                time.sleep(0.1)
            assert proc.poll() is None, f"stream exited early ({proc.returncode}): {log.read_text()[-3000:]}"
            assert query_starts(log) > before, f"no query started within {START_TIMEOUT_S}s: {log.read_text()[-3000:]}"
            time.sleep(rng.uniform(3.0, 20.0))
            kill_group(proc)
    finally:
        sender.join(timeout=DRAIN_TIMEOUT_S)
    assert sent.get("sent") == streamed, sent

    proc = start_stream(config_file, log, "--available-now")
    out, _ = proc.communicate(timeout=DRAIN_TIMEOUT_S)
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["ok"] is True and summary["stop_reason"] == "drained"
    assert query_starts(log) == KILLS + 1 and (checkpoint / "commits").is_dir()

    batch = make_config(tmp_path / "batch", ingest={"data_docs": False})
    ingest(spark, batch, input_path=str(source))
    bronze = Lake.from_config(config).read(spark, C.BRONZE_EVENTS)
    expected = Lake.from_config(batch).read(spark, C.BRONZE_EVENTS)
    assert bronze.count() == bronze.select(C.EVENT_ID).distinct().count() == expected.count()
    assert_same(bronze.select(C.EVENT_ID), expected.select(C.EVENT_ID))
    assert_same(silver_values(spark, config), silver_values(spark, batch))
    assert_ids_match_index(spark, config)
    gold = Lake.from_config(config).read(spark, C.GOLD_RECOMMENDATIONS)
    assert gold.count() > 0
    assert gold.groupBy(C.USER_ID, C.VARIANT).count().where(F.col("count") > 1).count() == 0
