"""SIGTERM (a pod being stopped) during `clickrec train`: the MLflow run ends KILLED, not RUNNING.

Without the handler the process dies at once and MLflow shows the run as running forever; the
registry must not get a version either.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from tests.support.config import REPO_ROOT, make_config, write_config_file
from tests.support.data import write_planted_silver

# Enough grid that tuning is still running when the test sees the run start.
GRID = {"rank": [4, 8, 12], "reg_param": [0.05, 0.1], "alpha": [10.0], "max_iter": [8]}


pytestmark = pytest.mark.slow  # a real `clickrec train` process (its own JVM), stopped by SIGTERM


def test_sigterm_during_tuning_ends_the_run_killed_with_a_json_line(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path, train={"grid": GRID, "num_folds": 3, "num_blocks": 2},
                         spark={"driver_memory": "1g", "conf": {"spark.ui.showConsoleProgress": "false"}})
    write_planted_silver(spark, config, users=200, items=80)
    uri = config.mlflow.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry an earlier test configured
    log = tmp_path / "train.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clickrec.cli", "train", "--config", str(write_config_file(config, tmp_path / "c.yaml"))],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log.open("wb"), start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and "tuning cv over" not in log.read_text(errors="replace"):
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert proc.returncode == 143, text[-3000:]
    summary = json.loads(out.decode().strip().splitlines()[-1])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert [r.info.status for r in runs] == ["KILLED"], text[-3000:]
    assert summary == {"command": "train", "ok": False, "error": "stopped by SIGTERM", "error_type": "Terminated",
                       "killed_runs": [runs[0].info.run_id]}
    assert client.search_model_versions() == []
