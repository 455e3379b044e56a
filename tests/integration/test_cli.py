"""The CLI's contract: --help, a JSON summary as the last stdout line, clear errors.

Most checks call the CLI in this process (the `cli` fixture: `clickrec.cli.invoke`, what `main` runs, with
stdout and stderr captured); the real console entry point, a process with its exit code, is
run for a success, a bug (exit 1) and a bad option (exit 2), and under spark-submit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[2]


def clickrec(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`python -m clickrec.cli ARGS` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "clickrec.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )



def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_status_on_empty_lake(tmp_path: Path) -> None:
    result = clickrec(
        "status", "--config", "conf/local.yaml",
        "--set", f"lake.root={tmp_path / 'lake'}",
        "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode == 0, result.stderr
    summary = last_json(result.stdout)
    assert summary["ok"] is True
    tables = {t["table"]: t for t in summary["tables"]}
    assert set(tables) >= {"bronze/events", "bronze/quarantine", "silver/interactions",
                           "silver/user_index", "silver/item_index", "gold/recommendations",
                           "gold/popular_items"}
    assert all(t["exists"] is False and t["version"] is None for t in tables.values())
    assert summary["models"]["champion"] is None
    assert summary["stream"] is None  # no query has run on this lake
    assert not (tmp_path / "mlflow.db").exists()  # status creates nothing


def test_an_unexpected_error_prints_its_traceback_and_still_ends_with_a_json_line(tmp_path: Path) -> None:
    log = tmp_path / "lake" / "silver" / "interactions" / "_delta_log"
    log.mkdir(parents=True)
    (log / "00000000000000000000.json").write_text("this is not a Delta log\n")  # a corrupt table
    result = clickrec(
        "status", "--config", "conf/local.yaml",
        "--set", f"lake.root={tmp_path / 'lake'}",
        "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr and "clickrec status: unexpected error" in result.stderr
    summary = last_json(result.stdout)
    assert summary["ok"] is False and summary["command"] == "status"
    assert summary["error_type"] not in ("", "ClickrecError") and summary["error"]


def test_a_batch_job_on_an_unreachable_s3_store_exits_4_naming_the_endpoint(
    cli: Callable[..., subprocess.CompletedProcess[str]], spark: SparkSession, tmp_path: Path,
) -> None:
    """S3A refusing every connection is a store that is down (exit 4, worth retrying), not a bug."""
    from tests.support.unreachable import closed_port, unreachable_bucket

    endpoint = f"http://127.0.0.1:{closed_port()}"
    bucket = unreachable_bucket(spark, endpoint)  # what --set spark.conf.spark.hadoop.fs.s3a... gives a new JVM
    events = tmp_path / "events.csv"
    events.write_text("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
                      "2019-10-01 00:00:00 UTC,view,1,1,,,1.0,1,s1\n")
    result = cli("ingest", "--input", str(events), "--set", f"lake.root=s3a://{bucket}/lake",
                 "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.returncode == 4, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = last_json(result.stdout)
    assert summary["ok"] is False and summary["error_type"] == "StorageUnavailableError"
    assert endpoint.removeprefix("http://") in summary["error"] and f"s3a://{bucket}/lake" in summary["error"]


@pytest.mark.slow  # a process with its own JVM
def test_the_real_command_on_an_unreachable_s3_store_exits_4_with_s3a_retries_set_on_the_command_line(
    tmp_path: Path,
) -> None:
    from tests.support.unreachable import closed_port

    endpoint = f"http://127.0.0.1:{closed_port()}"
    events = tmp_path / "events.csv"
    events.write_text("event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
                      "2019-10-01 00:00:00 UTC,view,1,1,,,1.0,1,s1\n")
    s3a = "spark.conf.spark.hadoop.fs.s3a"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}
    result = subprocess.run(
        [sys.executable, "-m", "clickrec.cli", "ingest", "--input", str(events),
         "--set", "lake.root=s3a://clickrec/lake", "--set", f"s3.endpoint={endpoint}",
         "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
         "--set", f"spark.checkpoint_dir={tmp_path / 'checkpoints'}",
         "--set", "spark.master=local[1]", "--set", "spark.driver_memory=1g",
         "--set", f"{s3a}.attempts.maximum=0", "--set", f"{s3a}.retry.limit=0",
         "--set", f"{s3a}.connection.establish.timeout=2s"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    summary = last_json(result.stdout)
    assert summary["error_type"] == "StorageUnavailableError"
    assert endpoint.removeprefix("http://") in summary["error"] and "s3a://clickrec/lake" in summary["error"]


def test_status_with_repo_default_config(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """The README's `clickrec status --config conf/local.yaml` runs as written."""
    result = cli("status", "--config", "conf/local.yaml")
    assert result.returncode == 0, result.stderr
    assert last_json(result.stdout)["command"] == "status"


def test_bad_config_key_exits_non_zero_naming_it() -> None:
    result = clickrec("status", "--set", "lake.rooot=/tmp/x")
    assert result.returncode == 2
    assert "lake.rooot" in result.stderr
    summary = last_json(result.stdout)
    assert summary["ok"] is False and "lake.rooot" in summary["error"]


def test_missing_config_file_is_clear(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = cli("status", "--config", "conf/missing.yaml")
    assert result.returncode == 2
    assert "conf/missing.yaml not found" in result.stderr


def test_missing_default_config_names_the_folder_it_looked_in(
    tmp_path: Path, cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = cli("status", cwd=tmp_path)
    assert result.returncode == 2
    assert f"conf/local.yaml not found in {tmp_path}" in result.stderr
    assert last_json(result.stdout)["error_type"] == "ConfigError"


@pytest.mark.parametrize(
    ("args", "command", "message"),
    [
        (["ingest"], "ingest", "Missing option '--input'"),
        (["services", "up", "--bogus"], "services up", "No such option: --bogus"),
        (["nosuch"], "clickrec", "No such command 'nosuch'"),
        # the closed choices (clickrec.choices) are refused here, before any config or Spark
        (["ingest", "--input", "x", "--format", "csv"], "ingest", "Invalid value for '--format'"),
        (["train", "--promote", "sometimes"], "train", "Invalid value for '--promote'"),
        (["publish", "--alias", "default"], "publish", "Invalid value for '--alias'"),
        (["recommend", "--user", "u", "--variant", "x"], "recommend", "Invalid value for '--variant'"),
    ],
)
def test_usage_errors_end_stdout_with_a_json_line_too(
    args: list[str], command: str, message: str, cli: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Usage:" in result.stderr
    summary = last_json(result.stdout)
    assert summary["command"] == command and summary["ok"] is False
    assert summary["error_type"] == "UsageError" and message in summary["error"]


@pytest.mark.parametrize("command", [[], ["status"], ["generate"], ["ingest"], ["train"], ["publish"],
                                     ["pipeline"], ["recommend"], ["serve"], ["replay"], ["stream"],
                                     ["services"], ["services", "up"], ["services", "down"],
                                     ["services", "status"]])
def test_help(command: list[str], cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "Usage" in result.stdout


@pytest.mark.slow  # three spark-submit processes, a JVM each
def test_spark_submit_of_a_job_needs_the_jars_on_its_command_line_and_says_so(tmp_path: Path) -> None:
    """The README's `spark-submit jobs/ingest.py` line runs, and without the jars fails clearly."""
    events = tmp_path / "events.csv"
    events.write_text(
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        + "".join(f"2019-10-01 00:0{i}:00 UTC,view,{100 + i},1,,acme,1.50,{7 + i % 2},s{i % 2}\n" for i in range(6))
    )
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    job = ["jobs/ingest.py", "--input", str(events), "--set", f"lake.root={tmp_path / 'lake'}",
           "--set", "spark.master=local[2]", "--set", "spark.driver_memory=1g",
           "--set", f"spark.conf.spark.local.dir={tmp_path / 'spark-local'}"]

    def submit(*opts: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv_bin / "spark-submit"), *opts, *job], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    bare = submit()
    assert bare.returncode != 0
    assert "--driver-class-path '.cache/jars/spark/*'" in last_json(bare.stdout)["error"]
    ok = submit("--driver-class-path", ".cache/jars/spark/*")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert last_json(ok.stdout)["accepted"] == 6
