"""What train refuses: a model worse than popularity as first champion, and degenerate silver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyspark.sql import SparkSession

from clickrec.errors import InputError
from clickrec.train import run_train
from tests.support.cli import run_cli
from tests.support.config import make_config, write_config_file
from tests.support.data import popular_taste_rows, write_silver_rows

# one grid point that cannot fit much: rank 1, a huge regularisation, one iteration
POOR = {"rank": [1], "reg_param": [1000.0], "alpha": [1.0], "max_iter": [1]}


@pytest.mark.slow
def test_a_model_worse_than_popularity_does_not_become_the_first_champion(spark: SparkSession, tmp_path: Path) -> None:
    # every user has 10 rows, 7 of them in train: below 8, everyone is served the popular list
    config = make_config(tmp_path, train={"grid": POOR, "tuning": "train_validation", "num_blocks": 2},
                         publish={"min_user_interactions": 8})
    write_silver_rows(spark, config, popular_taste_rows())
    summary = run_train(spark, config)
    m, b = summary["metrics"], summary["baseline_metrics"]
    assert m["ndcg_at_10"] < b["ndcg_at_10"], (m, b)
    assert summary["served_metrics"] == pytest.approx(b, abs=1e-9)  # the confidence rule's lists are popularity's
    assert summary["champion_score"] is None  # an empty registry
    assert summary["promoted"] is False
    assert summary["promotion_reason"] == (
        f"challenger {m['ndcg_at_10']:.4f} <= popularity baseline {b['ndcg_at_10']:.4f} + margin 0.0")
    client = MlflowClient(tracking_uri=config.mlflow.tracking_uri)
    aliases = client.get_registered_model(config.mlflow.model_name).aliases
    assert aliases == {"challenger": 1}  # registered, not served as champion (forcing: unit-tested)


@pytest.mark.parametrize(("rows", "message"), [  # one user: test_degenerate_silver_exits_2_from_the_cli
    ([(u, 0, 1.0) for u in range(6)], "1 item (at least 2 needed)"),
    ([(u, 10 * u + i, 1.0) for u in range(4) for i in range(3)],
     "no item is shared by two users (4 users, 12 items, each item seen by one user)"),
])
def test_degenerate_silver_is_an_input_error_before_tuning(
    spark: SparkSession, tmp_path: Path, rows: list[tuple[int, int, float]], message: str,
) -> None:
    config = make_config(tmp_path)
    write_silver_rows(spark, config, rows)
    with pytest.raises(InputError, match="cannot train a collaborative model") as raised:
        run_train(spark, config)
    assert message in str(raised.value)
    assert not (tmp_path / "mlflow.db").exists()  # refused before any MLflow run


def test_degenerate_silver_exits_2_from_the_cli(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(tmp_path)
    write_silver_rows(spark, config, [(0, i, 1.0) for i in range(5)])
    result = run_cli(["train", "--config", str(write_config_file(config, tmp_path / "c.yaml"))], capsys)
    assert result.returncode == 2, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["error_type"] == "InputError" and "1 user (at least 2 needed)" in summary["error"]
