from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_mlflow_telemetry_is_off_unless_the_user_turns_it_on() -> None:
    # MLflow 3 reports usage to the internet by default; a job must not (it may run offline).
    probe = ("import clickrec.tracking; from mlflow.telemetry.utils import is_telemetry_disabled; "
             "print(is_telemetry_disabled())")
    env = {k: v for k, v in os.environ.items()
           if k not in {"MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK", "CI", "PYTEST_CURRENT_TEST"}}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    env["MLFLOW_DISABLE_TELEMETRY"] = "false"  # the user's own setting wins
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_batch_job_and_the_stream_set_mlflows_http_timeouts_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    from clickrec.tracking import Tracking
    from tests.support.config import make_config

    for var in (MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR):
        monkeypatch.delenv(var.name, raising=False)  # whatever Tracking sets is undone after the test
    Tracking(make_config(tmp_path).mlflow)  # the defaults of mlflow.http_*
    assert (MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get(),
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get()) == (30, 3, 1)
    Tracking(make_config(tmp_path).mlflow, stream=True)  # mlflow.stream_http_*
    assert (MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()) == (10, 1)
    tracking = Tracking(make_config(tmp_path, mlflow={"http_timeout_seconds": 7, "http_max_retries": 0}).mlflow)
    _ = tracking.client  # each call through the object sets them again (several Trackings in one process)
    assert (MLFLOW_HTTP_REQUEST_TIMEOUT.get(), MLFLOW_HTTP_REQUEST_MAX_RETRIES.get()) == (7, 0)
