"""`clickrec pipeline` on the embedded default when training promotes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.generate import generate_clickstream
from clickrec.io.lake import Lake
from clickrec.pipeline import run_pipeline
from clickrec.tracking import Tracking
from tests.support.config import make_config

ONE_POINT = {"rank": [4], "reg_param": [0.1], "alpha": [10.0], "max_iter": [3]}


pytestmark = pytest.mark.slow  # ingest, train and publish in one call


def test_promote_never_on_an_empty_registry_skips_publish_and_says_so(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path, train={"grid": ONE_POINT, "tuning": "train_validation", "num_blocks": 2,
                                          "promote": "never"})
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=3000, seed=5)

    summary = run_pipeline(spark, config, input_path=str(source))

    assert summary["ingest"]["rows_read"] == 3000
    assert summary["train"]["promoted"] is False and summary["train"]["model_version"] == 1
    champion, challenger = summary["publish"]["champion"], summary["publish"]["challenger"]
    assert set(champion) == {"skipped"} and "has the alias champion" in champion["skipped"]
    assert challenger["variant"] == "challenger" and challenger["model_version"] == 1 and challenger["users"] > 0
    assert Tracking(config.mlflow).alias_versions() == {"champion": None, "challenger": 1}
    gold = Lake.from_config(config).read(spark, C.GOLD_RECOMMENDATIONS)
    assert {r[C.VARIANT] for r in gold.select(C.VARIANT).distinct().collect()} == {"challenger"}
