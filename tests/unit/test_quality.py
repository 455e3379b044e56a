"""The expectation suite is the one source: its predicates and GX agree on every failing row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec.config import IngestConfig
from clickrec.errors import ConfigError
from clickrec.quality import load_suite, rejection_checks, suite_reasons, validate_batch
from clickrec.transforms.clickstream import flag_rejections

PARAMS = {"column_count": 9, "event_time_min": "2000-01-01 00:00:00", "event_time_max": "2030-01-01 00:00:00"}


def test_suite_parameters_come_from_conf() -> None:
    suite = load_suite(IngestConfig().events_suite, PARAMS)
    bounds = [e["kwargs"] for e in suite["expectations"] if e["meta"]["reason"] == "event_time_out_of_bounds"]
    assert bounds == [{"column": "event_time", "min_value": "2000-01-01 00:00:00",
                       "max_value": "2030-01-01 00:00:00"}]
    assert "missing_columns" in suite_reasons(suite) and "price_negative" in suite_reasons(suite)


def test_unsupported_expectation_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "suite.json"
    bad.write_text(json.dumps({"name": "s", "expectations": [
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 1}, "meta": {"reason": "r"}}]}))
    with pytest.raises(ConfigError, match=r"expectations\[0\].*expect_table_row_count_to_equal"):
        load_suite(bad, {})


def test_unknown_parameter_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "suite.json"
    bad.write_text(json.dumps({"name": "s", "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "x", "min_value": "${nope}"},
         "meta": {"reason": "r"}}]}))
    with pytest.raises(ConfigError, match="nope"):
        load_suite(bad, {})


def test_gx_and_the_predicates_count_the_same_failures(spark: SparkSession, tmp_path: Path) -> None:
    suite = load_suite(IngestConfig().ratings_suite, PARAMS)
    df = spark.createDataFrame(
        [("1", "a", 4.0, "2019-01-01 00:00:00", 4, True, True),
         (None, "a", 4.0, "2019-01-01 00:00:00", 4, True, True),
         ("2", "b c", None, "1990-01-01 00:00:00", 5, False, True),
         ("3", "d", float("nan"), "2019-01-01 00:00:00", 4, True, False)],
        "user_id string, item_id string, rating double, t string, column_count int, utf8_valid boolean, "
        "rating_finite boolean",
    ).withColumn("event_time", F.to_timestamp("t")).drop("t")
    flagged = df.transform(flag_rejections, checks=rejection_checks(suite))
    by_reason: dict[str, int] = {}
    for row in flagged.collect():
        for reason in row["reasons"]:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    assert by_reason == {"user_id_missing": 1, "extra_columns": 1, "invalid_utf8": 1,
                         "item_id_malformed": 1, "rating_invalid": 1, "event_time_out_of_bounds": 1,
                         "rating_not_finite": 1}
    docs = tmp_path / "docs"
    result = validate_batch(df, suite, run_name="t", docs_dir=str(docs))
    assert result["success"] is False
    assert {k: v for k, v in result["unexpected"].items() if v} == by_reason
    assert (docs / "index.html").is_file() and result["data_docs"] == str(docs / "index.html")
