"""Training against the real MLflow server: runs, metrics, artifacts, registry, alias."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from pyspark.sql import SparkSession

from clickrec.services import ServiceProcess
from clickrec.train import run_train
from tests.support.config import make_config
from tests.support.data import write_planted_silver


def test_train_logs_to_server(spark: SparkSession, mlflow_service: ServiceProcess, tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        mlflow={"tracking_uri": mlflow_service.url, "artifact_location": None,
                "experiment": "server-train", "model_name": "server-als"},
        train={"grid": {"rank": [4, 8], "reg_param": [0.05], "alpha": [10.0], "max_iter": [4]},
               "num_folds": 2, "num_blocks": 2},
    )
    write_planted_silver(spark, config, users=120, items=60)
    summary = run_train(spark, config)

    client = MlflowClient(tracking_uri=mlflow_service.url)
    parent = client.get_run(summary["run_id"])
    assert parent.data.metrics["ndcg_at_10"] == summary["metrics"]["ndcg_at_10"]
    for name in ("precision_at_10", "recall_at_10", "map_at_10", "coverage", "baseline_precision_at_10",
                 "baseline_ndcg_at_10"):
        assert name in parent.data.metrics, name
    assert parent.data.tags["input.silver/interactions.version"] == "0"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary['run_id']}'"
    )
    assert sorted(int(c.data.params["rank"]) for c in children) == [4, 8]
    assert sorted(c.info.run_name for c in children) == ["rank=4 reg=0.05 alpha=10 iter=4",
                                                         "rank=8 reg=0.05 alpha=10 iter=4"]
    assert all("cv_ndcg_at_10" in c.data.metrics for c in children)
    plots = {a.path for a in client.list_artifacts(summary["run_id"], "plots")}
    assert plots == {"plots/grid_heatmap.png", "plots/model_vs_baseline.png"}
    mv = client.get_model_version_by_alias("server-als", "champion")
    assert int(mv.version) == summary["model_version"] == 1
    assert mv.run_id == summary["run_id"]
    assert int(client.get_model_version_by_alias("server-als", "challenger").version) == 1
