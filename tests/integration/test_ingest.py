"""`clickrec ingest` end to end on a local Delta lake: reconcile, rerun, second batch, incremental.

One lake for the module: 20k generated events, the same input again, then a second batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig, GenerateConfig
from clickrec.generate import generate_clickstream
from clickrec.ingest import SUMMARY_TABLES, ingest, recompute_interactions
from clickrec.io.lake import Lake
from tests.support.config import make_config

# Enough for repeated rows (0.2%), 30 event dates and ids returning in the second batch.
FIRST_EVENTS = 20_000


pytestmark = pytest.mark.slow  # a 24k-event lake and ingests repaired after failures


def at_version(spark: SparkSession, config: ClickrecConfig, table: str, version: int) -> DataFrame:
    return Lake.from_config(config).read(spark, table, version)


def latest(spark: SparkSession, config: ClickrecConfig, table: str) -> DataFrame:
    return Lake.from_config(config).read(spark, table)


def assert_same_rows(actual: DataFrame, expected: DataFrame) -> None:
    """Exact multiset equality, computed in Spark (the frames are too big to collect)."""
    assert actual.columns == expected.columns
    missing, extra = expected.exceptAll(actual).limit(5).collect(), actual.exceptAll(expected).limit(5).collect()
    assert not missing and not extra, f"missing {missing}, unexpected {extra}"
    assert actual.count() == expected.count() > 0


@pytest.fixture(scope="module")
def lake(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """First ingest of 20k events, a rerun of the same file, then a second batch."""
    tmp = tmp_path_factory.mktemp("ingest")
    config = make_config(tmp)
    first_file = tmp / "in" / "day1.csv.gz"
    gen1 = generate_clickstream(first_file, events=FIRST_EVENTS, seed=11)
    first = ingest(spark, config, input_path=str(first_file))
    snapshot = {t: first["tables"][t] for t in SUMMARY_TABLES if first["tables"][t] is not None}
    users_before = latest(spark, config, C.SILVER_USER_INDEX).collect()
    items_before = latest(spark, config, C.SILVER_ITEM_INDEX).collect()
    rerun = ingest(spark, config, input_path=str(first_file))
    # second batch: another seed over the same id ranges (returning users and items) + new ones
    second_file = tmp / "in2" / "day2.csv"
    # more users and items per event than the first batch: returning ids and new ones
    generate_clickstream(second_file, events=4_000, seed=12,
                         settings=GenerateConfig(events_per_user=4, events_per_item=8))
    second = ingest(spark, config, input_path=str(second_file))
    return {"config": config, "gen1": gen1, "first": first, "rerun": rerun, "second": second,
            "snapshot": snapshot, "users_before": users_before, "items_before": items_before}


def test_counts_reconcile(spark: SparkSession, lake: dict[str, Any]) -> None:
    first, config = lake["first"], lake["config"]
    assert first["rows_read"] == FIRST_EVENTS == lake["gen1"]["events"]
    assert first["rows_read"] == first["accepted"] + first["duplicates"] + first["quarantined"]
    assert first["quarantined"] == 0 and first["quarantined_by_reason"] == {}
    assert 0 < first["duplicates"] <= lake["gen1"]["repeated_rows"]
    bronze = at_version(spark, config, C.BRONZE_EVENTS, first["tables"][C.BRONZE_EVENTS])
    assert bronze.count() == first["accepted"]
    assert bronze.select(C.EVENT_ID).distinct().count() == first["accepted"]
    silver = at_version(spark, config, C.SILVER_INTERACTIONS, first["tables"][C.SILVER_INTERACTIONS])
    assert silver.count() == first["interactions"] > 0
    assert first["users"] == bronze.select(C.USER_ID).distinct().count()
    assert silver.where(F.col(C.USER_IDX).isNull() | F.col(C.ITEM_IDX).isNull()).count() == 0
    assert silver.where(F.col(C.RATING) <= 0).count() == 0
    # views in silver add up to the accepted views in bronze
    views = bronze.where(F.col(C.EVENT_TYPE) == "view").count()
    assert silver.agg(F.sum(C.VIEWS)).first()[0] == views
    assert first["quality"]["success"] is True
    assert Path(first["data_docs"]).is_file()


def test_bronze_is_partitioned_by_event_date(spark: SparkSession, lake: dict[str, Any]) -> None:
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, Lake.from_config(lake["config"]).path(C.BRONZE_EVENTS)).detail().first()
    assert detail["partitionColumns"] == [C.EVENT_DATE]


def test_rerun_of_the_same_input_changes_no_table(spark: SparkSession, lake: dict[str, Any]) -> None:
    rerun, first, config = lake["rerun"], lake["first"], lake["config"]
    assert rerun["rows_read"] == first["rows_read"]
    assert rerun["accepted"] == 0 and rerun["duplicates"] == first["rows_read"]
    assert rerun["interactions_changed"] == 0 and rerun["new_users"] == 0 and rerun["new_items"] == 0
    assert set(lake["snapshot"]) >= {C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.SILVER_USER_INDEX}
    for table, version in lake["snapshot"].items():
        # not one commit on any table: the content after the rerun is the content before it
        assert rerun["tables"][table] == version, f"{table} got a new version on rerun"
    assert latest(spark, config, C.BRONZE_EVENTS).where(
        F.col(C.INGEST_RUN_ID) == rerun["run_id"]).count() == 0


def test_second_batch_keeps_every_existing_id(spark: SparkSession, lake: dict[str, Any]) -> None:
    second, config = lake["second"], lake["config"]
    assert second["accepted"] > 0 and second["new_users"] > 0 and second["new_items"] > 0
    for table, before in ((C.SILVER_USER_INDEX, lake["users_before"]),
                          (C.SILVER_ITEM_INDEX, lake["items_before"])):
        after = {r[C.SOURCE_ID]: r[C.IDX] for r in latest(spark, config, table).collect()}
        assert all(after[r[C.SOURCE_ID]] == r[C.IDX] for r in before), f"an id changed in {table}"
        assert sorted(after.values()) == list(range(len(after))), f"{table} ids not dense/unique"
        assert len(after) > len(before)


def test_incremental_silver_equals_a_full_recompute(spark: SparkSession, lake: dict[str, Any]) -> None:
    config = lake["config"]
    assert 0 < lake["second"]["interactions_changed"] < lake["second"]["interactions"]  # incremental
    assert_same_rows(latest(spark, config, C.SILVER_INTERACTIONS), recompute_interactions(spark, config))


def test_a_job_killed_between_bronze_and_silver_is_repaired_by_a_rerun(
    spark: SparkSession, config: ClickrecConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clickrec import ingest as ingest_module

    data = tmp_path / "in.csv"
    generate_clickstream(data, events=1000, seed=5)

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as patch:
        patch.setattr(ingest_module, "update_silver", killed)
        with pytest.raises(KeyboardInterrupt):
            ingest(spark, config, input_path=str(data))
    assert latest(spark, config, C.BRONZE_EVENTS).count() > 0
    assert not (Path(Lake.from_config(config).path(C.SILVER_INTERACTIONS)) / "_delta_log").exists()
    again = ingest(spark, config, input_path=str(data))
    assert again["accepted"] == 0 and again["duplicates"] == 1000 and again["interactions"] > 0
    assert_same_rows(latest(spark, config, C.SILVER_INTERACTIONS), recompute_interactions(spark, config))


def test_in_batch_dedup_keeps_one_row_per_event_id_the_same_row_every_time(
    spark: SparkSession, tmp_path: Path
) -> None:
    from clickrec.ingest import dedup_by_event_id

    rows = [("a", "u1", 3.0), ("b", "u2", 1.0), ("b", "u9", 0.5), ("b", "u2", 2.0), ("c", "u3", 1.0),
            ("c", "u3", 1.0)]
    valid = spark.createDataFrame(rows, f"{C.EVENT_ID} string, {C.USER_ID} string, {C.PRICE} double")
    deduped = dedup_by_event_id(spark, valid.repartition(3), str(tmp_path / "repeated"))
    got = sorted(tuple(r) for r in deduped.select(C.EVENT_ID, C.USER_ID, C.PRICE).collect())
    # one row per id; of a repeated id, the smallest row (user_id, then price)
    assert got == [("a", "u1", 3.0), ("b", "u2", 1.0), ("c", "u3", 1.0)]
    again = sorted(tuple(r) for r in deduped.select(C.EVENT_ID, C.USER_ID, C.PRICE).collect())
    assert again == got


def test_first_ingest_with_source_event_ids_repeated_with_other_content(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Silver is computed beside the first bronze write: it must see the rows bronze keeps."""
    config = make_config(tmp_path, ingest={"source_columns": ["event_id", *C.REES46_COLUMNS]})
    header = ",".join(["event_id", *C.REES46_COLUMNS])
    lines = [
        "e1,2019-10-01 00:00:00 UTC,view,p1,c1,,,1.0,u1,s1",
        "e2,2019-10-01 00:01:00 UTC,view,p2,c1,,,1.0,u1,s1",
        "e2,2019-10-03 00:01:00 UTC,purchase,p3,c1,,,1.0,u1,s1",  # same id, other content
        "e3,2019-10-01 00:02:00 UTC,cart,p2,c1,,,1.0,u1,s1",
    ]
    data = tmp_path / "ids.csv"
    data.write_text("\n".join([header, *lines]) + "\n")
    summary = ingest(spark, config, input_path=str(data))
    assert (summary["rows_read"], summary["accepted"], summary["duplicates"]) == (4, 3, 1)
    assert latest(spark, config, C.BRONZE_EVENTS).where(F.col(C.EVENT_ID) == "e2").count() == 1
    assert_same_rows(latest(spark, config, C.SILVER_INTERACTIONS), recompute_interactions(spark, config))


def test_a_killed_ingest_is_repaired_by_the_next_ingest_of_another_input(
    spark: SparkSession, config: ClickrecConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run that fails or is killed between its bronze and silver commits leaves its lease on
    # silver behind, expired. The next ingest, whatever its input, recomputes the users of that
    # run's bronze rows too, so silver catches up without a rerun of the input.
    from clickrec import ingest as ingest_module
    from clickrec.io import leases

    files = {}
    for name, seed, events in (("a", 5, 1000), ("b", 6, 1000), ("c", 7, 150), ("d", 8, 500)):
        files[name] = tmp_path / f"{name}.csv"
        generate_clickstream(files[name], events=events, seed=seed)
    ingest(spark, config, input_path=str(files["a"]))

    def fails(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("disk full (injected)")

    with monkeypatch.context() as patch:  # b: bronze committed, silver not
        patch.setattr(ingest_module, "update_silver", fails)
        with pytest.raises(RuntimeError, match="injected"):
            ingest(spark, config, input_path=str(files["b"]))
    (failed_b,) = leases.expired_owners(Lake.from_config(config), C.SILVER_INTERACTIONS, "ingest-")
    run_b = failed_b.removeprefix("ingest-")
    assert latest(spark, config, C.BRONZE_EVENTS).where(F.col(C.INGEST_RUN_ID) == run_b).count() > 0
    with monkeypatch.context() as patch:  # d: nothing committed at all
        patch.setattr(ingest_module.delta, "insert_unless_taken", fails)  # the bronze insert
        with pytest.raises(RuntimeError, match="injected"):
            ingest(spark, config, input_path=str(files["d"]))
    assert len(leases.expired_owners(Lake.from_config(config), C.SILVER_INTERACTIONS, "ingest-")) == 2

    summary = ingest(spark, config, input_path=str(files["c"]))
    assert summary["repaired_runs"] == [run_b]  # d had no bronze rows: nothing of it to repair
    assert_same_rows(latest(spark, config, C.SILVER_INTERACTIONS), recompute_interactions(spark, config))
    assert leases.expired_owners(Lake.from_config(config), C.SILVER_INTERACTIONS, "ingest-") == []
    assert ingest(spark, config, input_path=str(files["c"]))["repaired_runs"] == []
