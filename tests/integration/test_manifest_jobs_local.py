"""The manifests' jobs, run locally with the manifests' own arguments on a small generated lake.

Each SparkApplication of the base is run in pipeline order as `python jobs/<job>.py ARGS`
(what spark-submit runs in the pod) with its manifest arguments kept as they are, except
that the config is conf/local.yaml instead of the mounted conf/k8s.yaml and the bucket
`s3a://clickrec/` is a local folder; local-mode `--set` overrides put the lake, checkpoints and
MLflow store under a temporary folder. Jobs whose subcommand does not exist yet are the
PENDING_SUBCOMMANDS of tests/support/k8s.py and are not run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.k8s import BASE_DIR, PENDING_SUBCOMMANDS, REPO_ROOT, job_of, kustomize_build

pytestmark = pytest.mark.timeout(1800)

ORDER = ["ingest", "train", "publish", "pipeline", "stream"]
# Jobs that need a Kafka broker (conf/local.yaml has none): their manifest arguments are parsed
# by test_jobs.py and the job itself runs against the real broker in tests/services/test_stream*.py.
NEEDS_BROKER = {"stream"}
BUCKET = "s3a://clickrec/"
MOUNTED_CONFIG = "/etc/clickrec/k8s.yaml"
EVENTS = 3000


def local_overrides(tmp: Path) -> list[str]:
    sets = {
        "lake.root": tmp / "lake",
        "spark.checkpoint_dir": tmp / "checkpoints",
        "mlflow.tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
        "mlflow.artifact_location": tmp / "mlartifacts",
        "spark.master": "local[2]",
        "spark.shuffle_partitions": 2,
        "spark.driver_memory": "2g",
        "spark.log_level": "ERROR",
        # One small grid point and two folds: the job's path, not the model's quality.
        "train.grid.rank": "[4]",
        "train.grid.reg_param": "[0.1]",
        "train.grid.alpha": "[10.0]",
        "train.grid.max_iter": "[3]",
        "train.num_folds": 2,
    }
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def localize(args: list[str], bucket_dir: Path) -> list[str]:
    """The manifest's arguments with the mounted config and the bucket made local."""
    out = []
    for arg in args:
        if arg == MOUNTED_CONFIG:
            out.append(str(REPO_ROOT / "conf" / "local.yaml"))
        elif arg.startswith(BUCKET):
            out.append(str(bucket_dir / arg.removeprefix(BUCKET)))
        else:
            out.append(arg)
    return out


def run_job(job: str, args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "jobs" / f"{job}.py"), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{job} failed ({result.returncode}):\n{result.stderr[-4000:]}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["command"] == job, summary
    return summary


def check_ingest(summary: dict[str, Any], tmp: Path) -> None:
    assert summary["rows_read"] == EVENTS
    assert (
        summary["rows_read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    )
    for table in ("bronze/events", "silver/interactions", "silver/user_index", "silver/item_index"):
        assert (tmp / "lake" / table / "_delta_log").is_dir(), table


def check_train(summary: dict[str, Any], tmp: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    versions = client.search_model_versions("name='clickrec-als'")
    assert versions, "train registered no model version"


def check_publish(summary: dict[str, Any], tmp: Path) -> None:
    assert summary["variant"] == "champion" and summary["users"] > 0
    assert summary["announcement"]["sent"] is False  # conf/local.yaml has no Kafka
    assert (tmp / "lake" / "gold" / "recommendations" / "_delta_log").is_dir()


def check_pipeline(summary: dict[str, Any], tmp: Path) -> None:
    assert set(summary) >= {"ingest", "train", "publish"}
    assert summary["ingest"]["accepted"] == 0  # the same input again: nothing new
    assert summary["publish"]["champion"]["users"] > 0


CHECKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "ingest": check_ingest,
    "train": check_train,
    "publish": check_publish,
    "pipeline": check_pipeline,
}


def test_each_manifest_runs_locally_and_does_what_it_says(tmp_path: Path) -> None:
    apps = {
        job_of(o["spec"]): o["spec"]
        for o in kustomize_build(BASE_DIR)
        if o["kind"] == "SparkApplication"
    }
    assert sorted(apps) == sorted(ORDER)
    runnable = [job for job in ORDER if job not in PENDING_SUBCOMMANDS | NEEDS_BROKER]
    assert runnable, "no manifest's job exists yet"

    bucket_dir = tmp_path / "bucket"
    raw = bucket_dir / "raw" / "clickstream"
    raw.mkdir(parents=True)
    generated = subprocess.run(
        [sys.executable, "-m", "clickrec.cli", "generate", "--events", str(EVENTS),
         "--out", str(raw / "events.csv")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr[-4000:]

    ran = []
    for job in runnable:
        args = localize(apps[job]["arguments"], bucket_dir) + local_overrides(tmp_path)
        summary = run_job(job, args)
        CHECKS.get(job, lambda s, t: None)(summary, tmp_path)
        ran.append(job)
    assert ran == runnable
