from __future__ import annotations

import os
import subprocess
import sys


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
