"""The manifests' jobs, run locally with the manifests' own arguments on a small generated lake.

Each SparkApplication of the base is run in pipeline order as `python jobs/<job>.py ARGS`
(what spark-submit runs in the pod) with its manifest arguments kept as they are, except
that the config is conf/local.yaml instead of the mounted conf/k8s.yaml and the bucket
`s3a://clickrec/` is a local folder; local-mode `--set` overrides put the lake, checkpoints and
MLflow store under a temporary folder. Jobs whose subcommand does not exist yet are the
PENDING_SUBCOMMANDS of tests/support/k8s.py and are not run.

The job files run in this process (as `__main__`, with their arguments in sys.argv), on the
run's Spark session: one JVM for the four jobs instead of one each. That the entry files also
start as real processes, under spark-submit and with their exit codes, is what
test_cli.py's spark-submit test and test_ingest_inputs.py's CLI test check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from clickrec import cli
from tests.support.cli import run_entry
from tests.support.k8s import BASE_DIR, PENDING_SUBCOMMANDS, REPO_ROOT, job_of, kustomize_build

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

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
        # Such a model need not beat popularity, which `auto` requires of a first champion;
        # publish (next) needs one.
        "train.promote": "always",
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


def run_job(job: str, args: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code, out, err = run_entry(REPO_ROOT / "jobs" / f"{job}.py", args, capsys)
    assert code == 0, f"{job} failed ({code}):\n{err[-4000:]}"
    summary = json.loads(out.strip().splitlines()[-1])
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


def test_each_manifest_runs_locally_and_does_what_it_says(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # `spark` first: the jobs' factory then gets the run's session (getOrCreate), not a new JVM.
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
    monkeypatch.chdir(REPO_ROOT)  # the jobs' relative paths (conf/, .cache/jars) are the repository's
    with pytest.raises(SystemExit) as generated:
        cli.main(["generate", "--events", str(EVENTS), "--out", str(raw / "events.csv")])
    err = capsys.readouterr().err
    assert generated.value.code == 0, err[-4000:]

    ran = []
    for job in runnable:
        args = localize(apps[job]["arguments"], bucket_dir) + local_overrides(tmp_path)
        summary = run_job(job, args, capsys)
        CHECKS.get(job, lambda s, t: None)(summary, tmp_path)
        ran.append(job)
    assert ran == runnable
