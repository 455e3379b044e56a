"""conf/stack.yaml as a user runs it after `clickrec services up`: the whole pipeline on MinIO,
the MLflow server and Kafka, then the serving reader on the published table, without Spark."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.config import load_config
from clickrec.generate import generate_clickstream
from clickrec.io.lake import Lake
from clickrec.pipeline import run_pipeline
from clickrec.services import LAKE_BUCKET, ServiceProcess, env_lines
from clickrec.serving.reader import RecommendationReader
from clickrec.spark import apply_s3a
from tests.support.services import objects

REPO = Path(__file__).resolve().parents[2]
EVENTS = 1500


def test_the_stack_config_runs_the_pipeline_and_serves_from_minio(
    spark: SparkSession, kafka_service: ServiceProcess, minio_env: ServiceProcess, mlflow_service: ServiceProcess,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What `source .clickrec/services/services.env` puts in a user's shell.
    services = {"kafka": kafka_service, "minio": minio_env, "mlflow": mlflow_service}
    for line in env_lines(services).splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        monkeypatch.setenv(key, value)
    run = uuid.uuid4().hex[:8]
    config = load_config(REPO / "conf" / "stack.yaml", [
        f"lake.root=s3a://{LAKE_BUCKET}/stack-{run}/lake",
        f"mlflow.experiment=stack-{run}", f"mlflow.model_name=stack-{run}", f"kafka.models_topic=models-{run}",
        # the path through the stack, not the model's quality: one small grid point, two folds
        "train.grid.rank=[4]", "train.grid.reg_param=[0.1]", "train.grid.alpha=[10.0]", "train.grid.max_iter=[3]",
        "train.num_folds=2", "train.num_blocks=2",
    ])
    apply_s3a(spark, config.s3)  # the test run's one session, pointed at this MinIO
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=EVENTS, seed=21)

    summary = run_pipeline(spark, config, input_path=str(source))

    ingest = summary["ingest"]
    assert ingest["rows_read"] == EVENTS == ingest["accepted"] + ingest["duplicates"] + ingest["quarantined"]
    # GX 1.x has no S3 store: the data docs are rendered locally and copied under the lake.
    lake = config.lake.root.removeprefix(f"s3a://{LAKE_BUCKET}/")
    assert ingest["data_docs"] == f"{config.lake.root}/_quality/data_docs/index.html"
    docs = objects(minio_env, f"{lake}/_quality/data_docs/")
    assert f"{lake}/_quality/data_docs/index.html" in docs
    assert any("/validations/" in name and name.endswith(".html") for name in docs), docs
    # the ingest's scratch is gone (s3a may leave an empty folder marker behind)
    assert [n for n in objects(minio_env, f"{lake}/_staging/") if not n.endswith("/")] == []
    assert summary["train"]["model_name"] == f"stack-{run}" and summary["train"]["promoted"] is True
    champion = summary["publish"]["champion"]
    assert champion["users"] > 0 and champion["announcement"]["sent"] is True

    gold = Lake.from_config(config).open(C.GOLD_RECOMMENDATIONS)  # delta-rs straight from MinIO
    assert gold is not None
    users = gold.to_pyarrow_table(columns=[C.USER_ID, C.VARIANT]).to_pylist()
    user = next(r[C.USER_ID] for r in users if r[C.VARIANT] == "champion")
    answer = RecommendationReader(config).recommendations(user, n=3)
    assert answer["source"] == C.SOURCE_BATCH and len(answer["items"]) == 3
    assert answer["model_version"] == champion["model_version"]
