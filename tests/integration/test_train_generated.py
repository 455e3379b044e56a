"""Train on generated clickstream (planted tastes) after a real ingest; run the notebook on it."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from pyspark.sql import SparkSession

from clickrec.config import ClickrecConfig
from clickrec.generate import generate_clickstream
from clickrec.ingest import ingest
from clickrec.train import run_train
from tests.support.config import REPO_ROOT, make_config

# On the generator's planted tastes, ALS must beat popularity's nDCG@10 by this factor.
MIN_NDCG_RATIO = 1.5


pytestmark = pytest.mark.slow  # generates, ingests and tunes 40k events; runs the notebook


@pytest.fixture(scope="module")
def trained_lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> tuple[ClickrecConfig, dict]:
    tmp = tmp_path_factory.mktemp("generated")
    config = make_config(
        tmp,
        train={"grid": {"rank": [16], "reg_param": [0.1], "alpha": [0.5, 2.0], "max_iter": [8]},
               "num_folds": 2, "num_blocks": 2},
    )
    events = tmp / "events.csv.gz"
    generate_clickstream(events, events=40_000, seed=11, settings=config.generate)
    ingest(spark, config, input_path=str(events), input_format="rees46")
    return config, run_train(spark, config)


def test_model_beats_popularity_on_generated_data(trained_lake: tuple[ClickrecConfig, dict]) -> None:
    _, summary = trained_lake
    m, b = summary["metrics"], summary["baseline_metrics"]
    assert m["ndcg_at_10"] > MIN_NDCG_RATIO * b["ndcg_at_10"], (m, b)
    assert m["recall_at_10"] > b["recall_at_10"]
    assert summary["promoted"] is True


def test_notebook_runs_on_the_lake(trained_lake: tuple[ClickrecConfig, dict], tmp_path: Path) -> None:
    config, _ = trained_lake
    conf_file = tmp_path / "notebook.yaml"
    conf_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    nb = nbformat.read(REPO_ROOT / "notebooks" / "explore.ipynb", as_version=4)
    os.environ["CLICKREC_CONFIG"] = str(conf_file)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    finally:
        os.environ.pop("CLICKREC_CONFIG", None)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)
    assert "silver/interactions" in text and "ndcg_at_10" in text
    assert "| recommended:" in text  # the per-user category comparison printed
