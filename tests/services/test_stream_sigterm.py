"""SIGTERM stops `clickrec stream` gracefully: the running batch finishes, exit 0, JSON summary.

No model is registered, so the stream runs bronze and silver only (fold-in waits for a
champion) and says so; the events it committed are in bronze exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.generate import generate_clickstream
from clickrec.io.lake import Lake
from clickrec.replay import replay
from clickrec.services import ServiceProcess
from tests.support.config import REPO_ROOT, make_config, write_config_file

START_TIMEOUT_S = 240.0


def test_sigterm_stops_after_the_running_batch(spark: SparkSession, kafka_service: ServiceProcess, tmp_path: Path) -> None:
    topic = f"clickstream-{uuid.uuid4().hex[:8]}"
    config = make_config(
        tmp_path, kafka={"bootstrap_servers": kafka_service.url, "clickstream_topic": topic},
        stream={"trigger_seconds": 0.5, "query_name": "sigterm-test"}, ingest={"data_docs": False},
        spark={"driver_memory": "1g", "conf": {"spark.ui.showConsoleProgress": "false"}},
    )
    events = tmp_path / "events.csv"
    generate_clickstream(events, events=300, seed=4)
    sent = replay(config, input_path=str(events), rate=0)["sent"]
    log = tmp_path / "stream.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clickrec.cli", "stream", "--max-seconds", "900",
         "--config", str(write_config_file(config, tmp_path / "stream.yaml"))],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log.open("wb"), start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None and "batch 0:" not in log.read_text(errors="replace"):
            time.sleep(0.2)
        assert "batch 0:" in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
        proc.send_signal(signal.SIGTERM)  # the driver process only, as a supervisor would
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["ok"] is True and summary["stop_reason"] == "sigterm"
    assert summary["rows_read"] == sent and summary["model_version"] is None
    bronze = Lake.from_config(config).read(spark, C.BRONZE_EVENTS)
    assert bronze.count() == bronze.select(C.EVENT_ID).distinct().count() == summary["accepted"] > 0
