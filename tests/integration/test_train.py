"""`clickrec train` end to end on planted data with the local SQLite MLflow store.

One lake and registry for the module, and its first training run (the champion, v1), shared:
the tests run in file order. The first only reads that run, the second adds v2 (a challenger
split with another seed), the third registers v3-v6 and removes the artifacts at its end.
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from clickrec.config import ClickrecConfig
from clickrec.train import run_train
from tests.support.config import make_config
from tests.support.data import write_planted_silver

SMALL_GRID = {"rank": [4, 8], "reg_param": [0.05], "alpha": [10.0], "max_iter": [6]}
MARGIN = 0.10  # the model must beat popularity's nDCG@10 by at least this much on planted data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first_run(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[ClickrecConfig, dict[str, Any]]:
    """The planted lake and its first training run: 2-fold CV over two ranks, promoted as v1."""
    config = make_config(tmp_path_factory.mktemp("train"),
                         train={"grid": SMALL_GRID, "num_folds": 2, "k": 10, "num_blocks": 2})
    write_planted_silver(spark, config, users=200, items=80)
    return config, run_train(spark, config)


@pytest.fixture()
def trained_config(first_run: tuple[ClickrecConfig, dict[str, Any]]) -> ClickrecConfig:
    return first_run[0]


def test_model_beats_popularity(
    spark: SparkSession, first_run: tuple[ClickrecConfig, dict[str, Any]]
) -> None:
    trained_config, first = first_run
    m, b = first["metrics"], first["baseline_metrics"]
    assert m["ndcg_at_10"] > b["ndcg_at_10"] + MARGIN, (m, b)
    assert m["precision_at_10"] > b["precision_at_10"]
    assert 0 < m["coverage"] <= 1 and m["coverage"] > b["coverage"]
    assert first["promoted"] is True and first["model_version"] == 1  # no champion yet
    assert first["best_params"]["rank"] in (4, 8)
    silver = spark.read.format("delta").load(f"{trained_config.lake.root}/silver/interactions")
    rows = first["rows"]  # every silver row accounted for: planted data has no non-positive rating
    assert rows["read"] == silver.count() and rows["not_positive"] == 0
    assert rows["train"] + rows["test"] == rows["read"] and rows["test"] > 0


def test_the_champion_is_not_scored_on_pairs_it_was_trained_on(
    spark: SparkSession, trained_config: ClickrecConfig
) -> None:
    """A run with another split seed compares with the champion on test pairs neither trained on."""
    from clickrec import columns as C
    from clickrec.ml.estimator import RankingALSModel
    from clickrec.ml.split import split_stratified_random
    from clickrec.tracking import Tracking
    from clickrec.train import score_model, to_als_input

    # the champion: the module's first run, split with seed 42
    reseeded = trained_config.model_copy(update={"train": trained_config.train.model_copy(update={"seed": 7})})
    second = run_train(spark, reseeded, promote="never")
    assert second["model_version"] == 2 and second["promoted"] is False
    comparison = second["champion_comparison"]

    ratings = to_als_input(spark.read.format("delta").load(f"{trained_config.lake.root}/silver/interactions"))
    keys = [C.USER_IDX, C.ITEM_IDX]
    champ_train, _ = split_stratified_random(ratings, test_fraction=0.25, seed=42)
    new_train, new_test = split_stratified_random(ratings, test_fraction=0.25, seed=7)
    fair = new_test.join(champ_train.select(*keys), keys, "left_anti")
    assert comparison["exact"] is True
    assert comparison["test_rows"] == fair.count() < new_test.count()
    champion = RankingALSModel(Tracking(trained_config.mlflow).load_alias_model("champion"), None)
    champion._set(k=10)
    seen = new_train.select(*keys).unionByName(champ_train.select(*keys)).distinct()
    expected = score_model(champion, seen, fair, k=10, catalogue=1)["ndcg_at_10"]
    assert comparison["champion"] == pytest.approx(expected, abs=1e-9)
    assert second["champion_score"] == comparison["champion"]
    # what the champion scored on the new split alone: its memorised pairs counted as hits
    biased = score_model(champion, new_train, new_test, k=10, catalogue=1)["ndcg_at_10"]
    assert biased > comparison["champion"] + 0.01


def test_a_rerun_reproduces_and_promotion_follows_the_champion(
    spark: SparkSession, first_run: tuple[ClickrecConfig, dict[str, Any]]
) -> None:
    trained_config, first = first_run
    # Same seed and input versions: same metrics. The champion exists and ties, so no promotion.
    second = run_train(spark, trained_config)
    assert second["metrics"] == pytest.approx(first["metrics"], abs=1e-6)
    assert second["input_versions"] == first["input_versions"]
    assert second["model_version"] == 3  # v2 is the previous test's
    assert second["champion_score"] == pytest.approx(first["metrics"]["ndcg_at_10"], abs=1e-6)
    assert second["promoted"] is False

    client = MlflowClient(tracking_uri=trained_config.mlflow.tracking_uri)
    name = trained_config.mlflow.model_name
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 3
    # The MLflow UI opens a model-training experiment on its runs (not on GenAI traces), and
    # tells the parent runs apart by name; the run and the summary say which BLAS ALS ran on.
    experiment = client.get_experiment_by_name(trained_config.mlflow.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = [client.get_run(s["run_id"]) for s in (first, second)]
    assert runs[0].info.run_name != runs[1].info.run_name
    assert all(r.info.run_name.startswith(f"train {name} stratified_random-") for r in runs)
    assert first["blas"].startswith(("native (", "java (")) and runs[0].data.tags["blas"] == first["blas"]

    # A worse challenger (rank 1, one iteration) leaves the champion where it is ...
    worse = trained_config.model_copy(update={"train": trained_config.train.model_copy(
        update={"tuning": "train_validation",
                "grid": trained_config.train.grid.model_copy(update={"rank": [1], "max_iter": [1]})})})
    third = run_train(spark, worse)
    assert third["metrics"]["ndcg_at_10"] < third["champion_score"]
    assert third["promoted"] is False
    assert int(client.get_model_version_by_alias(name, "champion").version) == 1
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 4
    # ... unless promotion is forced.
    forced = run_train(spark, worse, promote="always")
    assert forced["promoted"] is True
    assert int(client.get_model_version_by_alias(name, "champion").version) == 5
    # A champion whose model cannot be loaded any more is not "no champion": the new model is
    # registered as challenger and the champion alias stays where it is.
    assert trained_config.mlflow.artifact_location is not None
    shutil.rmtree(trained_config.mlflow.artifact_location)
    orphaned = run_train(spark, worse)
    assert orphaned["promoted"] is False and orphaned["champion_score"] is None
    assert orphaned["promotion_reason"].startswith("champion not comparable: ")
    assert "@champion (v5) cannot be loaded" in orphaned["promotion_reason"]
    assert int(client.get_model_version_by_alias(name, "champion").version) == 5
    assert int(client.get_model_version_by_alias(name, "challenger").version) == 6
