"""Loading a registered model when MLflow's stores fail: a store that does not answer is a
ServiceError (exit 4, worth retrying), a model whose files are gone stays "unavailable".

One champion is registered for the module in a SQLite MLflow store; each test points the version's
artifact location somewhere else in that store (a closed 127.0.0.1 port behind MLflow's HTTP
artifact proxy or behind S3, a folder that was removed) and puts it back afterwards.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from clickrec.config import ClickrecConfig
from clickrec.errors import (
    ChampionUnavailableError,
    MlflowUnavailableError,
    ModelUnreadableError,
    NotFoundError,
    ServiceError,
)
from clickrec.tracking import Tracking
from tests.support.config import make_config
from tests.support.data import write_planted_silver
from tests.support.models import register_model
from tests.support.unreachable import closed_port


@pytest.fixture(scope="module")
def registered(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[ClickrecConfig, int]:
    """A config whose SQLite store has a champion (a tiny ALS), and its version."""
    tmp = tmp_path_factory.mktemp("tracking-failures")
    config = make_config(tmp, mlflow={"http_max_retries": 0, "http_timeout_seconds": 5})
    write_planted_silver(spark, config, users=40, items=20, per_user=6)
    return config, register_model(spark, config, max_iter=2)


@contextmanager
def artifacts_at(config: ClickrecConfig, location: str) -> Iterator[str]:
    """The registered version's files are looked for at `location` meanwhile; yields the real one."""
    db = sqlite3.connect(config.mlflow.tracking_uri.removeprefix("sqlite:///"))
    try:
        (real,) = db.execute("SELECT storage_location FROM model_versions").fetchone()
        db.execute("UPDATE model_versions SET storage_location = ?, source = ?", (location, location))
        db.commit()
        yield real
    finally:
        db.execute("UPDATE model_versions SET storage_location = ?, source = ?", (real, real))
        db.commit()
        db.close()


def test_an_artifact_server_that_does_not_answer_is_a_service_error_not_an_unavailable_champion(
    registered: tuple[ClickrecConfig, int],
) -> None:
    config, version = registered
    port = closed_port()
    tracking = Tracking(config.mlflow)
    with artifacts_at(config, f"http://127.0.0.1:{port}/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/model"):
        started = time.monotonic()
        with pytest.raises(MlflowUnavailableError) as champion:
            tracking.load_alias_model("champion")
        # mlflow.http_max_retries=0: one refused connection, not MLflow's 7 retries (about 4 minutes)
        assert time.monotonic() - started < 20
        with pytest.raises(MlflowUnavailableError):
            tracking.load_model_version(version)
    assert isinstance(champion.value, ServiceError) and champion.value.exit_code == 4
    assert f"127.0.0.1:{port}" in str(champion.value) and "champion" in str(champion.value)


def test_an_s3_artifact_store_that_does_not_answer_is_a_service_error(
    registered: tuple[ClickrecConfig, int], monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, version = registered
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unused")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    tracking = Tracking(config.mlflow)
    with artifacts_at(config, "s3://mlflow/artifacts/1/run/artifacts/model"):
        with pytest.raises(MlflowUnavailableError) as champion:
            tracking.load_alias_model("champion")
        with pytest.raises(MlflowUnavailableError) as by_version:
            tracking.load_model_version(version)
    assert endpoint in str(champion.value) and endpoint in str(by_version.value)


def test_a_champion_whose_files_are_gone_stays_unavailable(registered: tuple[ClickrecConfig, int],
                                                            tmp_path: Path) -> None:
    config, version = registered
    tracking = Tracking(config.mlflow)
    with artifacts_at(config, (tmp_path / "removed" / "model").as_uri()):
        with pytest.raises(ChampionUnavailableError):
            tracking.load_alias_model("champion")
        with pytest.raises(ModelUnreadableError) as by_version:
            tracking.load_model_version(version)
    assert isinstance(by_version.value, NotFoundError)
    assert tracking.load_alias_model("champion") is not None  # back where it was: it loads


def test_a_champion_with_part_of_its_files_gone_stays_unavailable(registered: tuple[ClickrecConfig, int],
                                                                  tmp_path: Path) -> None:
    config, _ = registered
    tracking = Tracking(config.mlflow)
    db = sqlite3.connect(config.mlflow.tracking_uri.removeprefix("sqlite:///"))
    (real,) = db.execute("SELECT storage_location FROM model_versions").fetchone()
    db.close()
    partial = tmp_path / "model"
    shutil.copytree(Path(real.removeprefix("file://")), partial)
    shutil.rmtree(partial / "sparkml" / "stages")  # Spark's own files of the pipeline
    with artifacts_at(config, partial.as_uri()), pytest.raises(ChampionUnavailableError):
        tracking.load_alias_model("champion")
