"""The Lake: one table name maps to a Spark path and a delta-rs URI; a missing table is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from clickrec import columns as C
from clickrec.config import LakeConfig, S3Config
from clickrec.errors import NotFoundError, TableNotFoundError
from clickrec.io.lake import INGEST_FIRST, Lake


def test_a_local_root_is_made_absolute_and_is_the_same_for_both_engines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    lake = Lake.of(LakeConfig(root="data/lake/"), S3Config())
    assert lake.path(C.SILVER_INTERACTIONS) == f"{tmp_path.resolve()}/data/lake/silver/interactions"
    assert lake.uri(C.SILVER_INTERACTIONS) == lake.path(C.SILVER_INTERACTIONS)
    assert lake.local and lake.storage_options == {}


def test_an_s3a_root_is_s3_for_delta_rs_with_the_endpoint_and_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    lake = Lake.of(LakeConfig(root="s3a://bucket/lake/"), S3Config(endpoint="http://127.0.0.1:9000"))
    assert lake.path(C.GOLD_RECOMMENDATIONS) == "s3a://bucket/lake/gold/recommendations"
    assert lake.uri(C.GOLD_RECOMMENDATIONS) == "s3://bucket/lake/gold/recommendations"
    assert not lake.local
    assert lake.storage_options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert lake.storage_options["AWS_ALLOW_HTTP"] == "true"
    assert (lake.storage_options["AWS_ACCESS_KEY_ID"], lake.storage_options["AWS_SECRET_ACCESS_KEY"]) == ("key", "secret")


def test_delta_rs_commits_on_s3_with_a_conditional_put_unless_single_writer_is_chosen() -> None:
    safe = Lake.of(LakeConfig(root="s3a://bucket/lake"), S3Config(endpoint="http://127.0.0.1:9000"))
    assert safe.storage_options["aws_conditional_put"] == "etag"  # the default: s3.commit conditional_put
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in safe.storage_options
    single = Lake.of(LakeConfig(root="s3a://bucket/lake"),
                     S3Config(endpoint="http://127.0.0.1:9000", commit="single_writer"))
    assert single.storage_options["AWS_S3_ALLOW_UNSAFE_RENAME"] == "true"
    assert "aws_conditional_put" not in single.storage_options


def test_a_missing_table_is_none_or_a_not_found_error_naming_table_and_path(tmp_path: Path) -> None:
    lake = Lake.of(LakeConfig(root=str(tmp_path / "lake")), S3Config())
    assert lake.open(C.SILVER_INTERACTIONS) is None
    with pytest.raises(TableNotFoundError) as caught:
        lake.require(C.SILVER_INTERACTIONS, hint=INGEST_FIRST)
    path = str(tmp_path.resolve() / "lake" / "silver" / "interactions")
    assert str(caught.value) == f"table silver/interactions not found at {path}: run `clickrec ingest` first"
    assert (caught.value.table, caught.value.path) == (C.SILVER_INTERACTIONS, path)
    assert isinstance(caught.value, NotFoundError) and caught.value.exit_code == 5
    assert str(TableNotFoundError("t", "/x")) == "table t not found at /x"


def test_delta_rs_retries_a_refused_store_for_over_10_s_and_at_most_a_minute() -> None:
    # object_store sleeps at least init_backoff before each retry and stops at retry_timeout
    # (its defaults give up within about 2 s: MinIO down for 10 s failed an ingest).
    opts = Lake.of(LakeConfig(root="s3a://bucket/lake"), S3Config(endpoint="http://127.0.0.1:9000")).storage_options
    assert opts["backoff_config.init_backoff"] == "1s" and int(opts["max_retries"]) * 1 >= 15
    assert opts["retry_timeout"] == "60s"
    assert Lake.of(LakeConfig(root="lake"), S3Config()).storage_options == {}  # local: no S3 options
