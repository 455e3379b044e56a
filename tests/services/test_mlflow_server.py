"""The real MLflow tracking server (SQLite store, artifacts on MinIO)."""

from __future__ import annotations

from pathlib import Path

import mlflow
from minio import Minio
from mlflow import MlflowClient

from clickrec.services import MLFLOW_BUCKET, ServiceProcess


def test_log_and_read_back(mlflow_service: ServiceProcess, minio_service: ServiceProcess, tmp_path: Path) -> None:
    mlflow.set_tracking_uri(mlflow_service.url)
    exp_id = mlflow.create_experiment(f"smoke-{tmp_path.name}")
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello from clickrec")
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_metric("ndcg_at_10", 0.42)
        mlflow.log_artifact(str(artifact))

    client = MlflowClient(tracking_uri=mlflow_service.url)
    got = client.get_run(run.info.run_id)
    assert got.data.metrics["ndcg_at_10"] == 0.42
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    local = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl"))
    assert Path(local).read_text() == "hello from clickrec"

    # The bytes went through the server to MinIO, not to a local folder.
    s3 = Minio(minio_service.url.removeprefix("http://"), access_key=minio_service.env["AWS_ACCESS_KEY_ID"],
               secret_key=minio_service.env["AWS_SECRET_ACCESS_KEY"], secure=False)
    keys = [o.object_name for o in s3.list_objects(MLFLOW_BUCKET, recursive=True)]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in keys), keys
