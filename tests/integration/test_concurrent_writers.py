"""Two writers on one table: the stream (delta-rs) and a batch job (Spark) racing to commit.

The races are made deterministic: the losing writer holds a handle on an older version, or a
hook commits the other writer's rows between a writer's read and its MERGE. Both engines and
the tables are real; only the moment of the other commit is chosen by the test.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec import ingest
from clickrec.config import ClickrecConfig
from clickrec.errors import ConcurrentWriteError
from clickrec.io import conflicts, delta, delta_rs
from clickrec.io.lake import Lake
from clickrec.microbatch import STREAM_REPLACES, BatchProcessor
from tests.support.config import make_config


def _index(spark: SparkSession, config: ClickrecConfig) -> dict[str, int]:
    rows = Lake.from_config(config).read(spark, C.SILVER_USER_INDEX).collect()
    ids = [r[C.IDX] for r in rows]
    keys = [r[C.SOURCE_ID] for r in rows]
    assert len(set(keys)) == len(keys), f"a key has two ids: {sorted(keys)}"
    assert len(set(ids)) == len(ids), f"an id was given twice: {sorted(ids)}"
    assert sorted(ids) == list(range(len(ids))), f"ids are not dense: {sorted(ids)}"
    return {r[C.SOURCE_ID]: r[C.IDX] for r in rows}


def _extend(spark: SparkSession, config: ClickrecConfig, users: list[str]) -> int:
    keys = spark.createDataFrame([(u,) for u in users], f"{C.USER_ID} string")
    return ingest.extend_index(spark, keys, C.USER_ID, Lake.from_config(config).path(C.SILVER_USER_INDEX))


def test_stream_with_an_older_index_version_does_not_reuse_ids(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert _extend(spark, config, ["u1", "u2"]) == 2
    stale = Lake.from_config(config).open(C.SILVER_USER_INDEX)  # the stream read version 0 ...
    assert _extend(spark, config, ["u3", "u4"]) == 2  # ... and an ingest gave ids 2 and 3 meanwhile

    ids = BatchProcessor(spark, config).index_ids(stale, ["u3", "u5"])

    index = _index(spark, config)
    assert index == {"u1": 0, "u2": 1, "u3": 2, "u4": 3, "u5": 4}
    assert ids == {"u3": 2, "u5": 4}


def test_ingest_numbers_again_the_ids_the_stream_took_before_its_merge(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path)
    _extend(spark, config, ["u1"])
    real = delta.insert_unless_taken
    calls = []

    def stream_commits_first(*args: object, **kwargs: object) -> int:
        if not calls:  # between the ingest's read of the index and its MERGE
            BatchProcessor(spark, config).index_ids(Lake.from_config(config).open(C.SILVER_USER_INDEX), ["s1", "u3"])
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(delta, "insert_unless_taken", stream_commits_first)
    added = _extend(spark, config, ["u2", "u3"])

    index = _index(spark, config)
    assert set(index) == {"u1", "u2", "u3", "s1"}
    assert index["s1"] == 1 and index["u3"] == 2  # the stream's, kept
    assert index["u2"] == 3 and added == 1  # renumbered after them
    assert len(calls) == 2


def _stale_merge_table(tmp_path: Path) -> tuple[str, DeltaTable]:
    """A delta-rs table, a handle on its version 0, and a commit after it (the handle is stale)."""
    from deltalake import write_deltalake

    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"k": ["a"], "v": [1]}))
    stale = DeltaTable(uri)
    write_deltalake(uri, pa.table({"k": ["b"], "v": [2]}), mode="append")
    return uri, stale


def test_retry_on_conflict_redoes_the_work_from_a_fresh_read(tmp_path: Path) -> None:
    uri, stale = _stale_merge_table(tmp_path)
    attempts = []

    def upsert(attempt: int) -> int:
        attempts.append(attempt)
        dt = stale if attempt == 1 else DeltaTable(uri)
        return delta_rs.insert_unless_taken(dt, pa.table({"k": ["c"], "v": [3]}), unique=("k",))

    assert conflicts.retry_on_conflict(upsert, what="t") == 1
    assert attempts == [1, 2]
    assert sorted(DeltaTable(uri).to_pyarrow_table().column("k").to_pylist()) == ["a", "b", "c"]


def test_retry_on_conflict_gives_up_with_a_clear_error(tmp_path: Path) -> None:
    _, stale = _stale_merge_table(tmp_path)

    def always_stale(_: int) -> int:
        return delta_rs.insert_unless_taken(stale, pa.table({"k": ["c"], "v": [3]}), unique=("k",))

    with pytest.raises(ConcurrentWriteError, match=r"t: lost 2 commit races") as err:
        conflicts.retry_on_conflict(always_stale, what="t", attempts=2)
    assert isinstance(err.value.__cause__, CommitFailedError)
    with pytest.raises(ValueError, match="not a conflict"):  # other errors are not retried
        conflicts.retry_on_conflict(lambda _: (_ for _ in ()).throw(ValueError("not a conflict")), what="t")


def test_stream_leaves_a_batch_list_of_another_model_version_alone(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path)
    lake = Lake.from_config(config)
    path = lake.path(C.GOLD_RECOMMENDATIONS)
    schema = (f"{C.USER_ID} string, {C.VARIANT} string, {C.MODEL_VERSION} int, {C.SOURCE} string, "
              f"{C.UPDATED_AT} string")
    spark.createDataFrame([
        ("a", "champion", 2, C.SOURCE_BATCH, "publish v2"),  # published after the stream loaded v1
        ("b", "champion", 1, C.SOURCE_BATCH, "publish v1"),
        ("c", "champion", 2, C.SOURCE_STREAM, "stream v2"),
        ("a", "challenger", 1, C.SOURCE_BATCH, "other variant"),
    ], schema).withColumn(C.MODEL_NAME, F.lit("m")).write.format("delta").partitionBy(C.VARIANT).save(path)
    rows = pa.table({C.USER_ID: ["a", "b", "c", "d"], C.VARIANT: ["champion"] * 4, C.MODEL_VERSION: [1] * 4,
                     C.SOURCE: [C.SOURCE_STREAM] * 4, C.UPDATED_AT: ["stream v1"] * 4, C.MODEL_NAME: ["m"] * 4})

    delta_rs.merge_upsert(lake.open(C.GOLD_RECOMMENDATIONS), rows, keys=C.RECOMMENDATION_KEYS,
                          update_when=STREAM_REPLACES, target_filter=f"t.`{C.VARIANT}` = 'champion'")

    got = {(r[C.USER_ID], r[C.VARIANT]): r[C.UPDATED_AT]
           for r in spark.read.format("delta").load(path).collect()}
    assert got == {("a", "champion"): "publish v2", ("b", "champion"): "stream v1", ("c", "champion"): "stream v1",
                   ("d", "champion"): "stream v1", ("a", "challenger"): "other variant"}


def test_a_first_ingest_that_finds_bronze_created_meanwhile_deduplicates_against_it(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bronze did not exist when the run looked, but another writer created it before the write.

    The first write creates the table (it does not append), so it fails instead of adding the
    other writer's events twice; the run is redone as an update deduplicated against bronze.
    """
    from clickrec.generate import generate_clickstream

    config = make_config(tmp_path, ingest={"data_docs": False})
    lake = Lake.from_config(config)
    generate_clickstream(tmp_path / "other.csv", events=300, seed=5)
    generate_clickstream(tmp_path / "mine.csv", events=200, seed=6)
    other = ingest.ingest(spark, config, input_path=str(tmp_path / "other.csv"))  # the other writer
    header, *other_lines = (tmp_path / "other.csv").read_text().splitlines()
    mine_lines = (tmp_path / "mine.csv").read_text().splitlines()[1:]
    (tmp_path / "both.csv").write_text("\n".join([header, *other_lines, *mine_lines]) + "\n")

    bronze = lake.path(C.BRONZE_EVENTS)
    real_exists, stale_looks = delta.table_exists, []

    def looked_before_it_was_created(spark_: SparkSession, path: str) -> bool:
        if path == bronze and not stale_looks:
            stale_looks.append(path)
            return False
        return real_exists(spark_, path)

    monkeypatch.setattr(ingest.delta, "table_exists", looked_before_it_was_created)
    mine = ingest.ingest(spark, config, input_path=str(tmp_path / "both.csv"))
    assert stale_looks == [bronze]
    events = spark.read.format("delta").load(bronze)
    assert events.count() == events.select(C.EVENT_ID).distinct().count()  # nothing twice
    assert events.count() == other["accepted"] + mine["accepted"]
    assert mine["rows_read"] == mine["accepted"] + mine["duplicates"] + mine["quarantined"]
    assert mine["duplicates"] >= other["accepted"]  # every event the other writer holds
    silver = lake.read(spark, C.SILVER_INTERACTIONS)
    assert sorted(silver.drop(C.USER_IDX, C.ITEM_IDX).collect()) == sorted(
        ingest.recompute_interactions(spark, config).drop(C.USER_IDX, C.ITEM_IDX).collect())


def _bronze_is_each_event_once(spark: SparkSession, config: ClickrecConfig) -> int:
    events = Lake.from_config(config).read(spark, C.BRONZE_EVENTS)
    total = events.count()
    assert total == events.select(C.EVENT_ID).distinct().count(), "an event is in bronze twice"
    return total


def _silver_is_a_recompute_of_bronze(spark: SparkSession, config: ClickrecConfig) -> None:
    silver = Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS)
    assert sorted(silver.drop(C.USER_IDX, C.ITEM_IDX).collect()) == sorted(
        ingest.recompute_interactions(spark, config).drop(C.USER_IDX, C.ITEM_IDX).collect())


def test_an_ingest_whose_events_another_writer_commits_first_inserts_each_once(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the ingest's dedup read of bronze and its insert, the stream commits some of the
    same events: the insert, a MERGE on event_id rather than a blind append, skips them."""
    from clickrec.generate import generate_clickstream

    config = make_config(tmp_path, ingest={"data_docs": False})
    lake = Lake.from_config(config)
    generate_clickstream(tmp_path / "first.csv", events=200, seed=7)
    generate_clickstream(tmp_path / "second.csv", events=300, seed=8)
    first = ingest.ingest(spark, config, input_path=str(tmp_path / "first.csv"))
    bronze = lake.path(C.BRONZE_EVENTS)
    real, calls = delta.insert_unless_taken, []

    def stream_commits_first(path: str, source_df: object, **kwargs: object) -> int:
        if path == bronze and not calls:  # the stream inserts 100 of the batch's events first
            rows = source_df.limit(100).toArrow()  # type: ignore[attr-defined]
            delta_rs.insert_unless_taken(lake.open(C.BRONZE_EVENTS), rows, unique=(C.EVENT_ID,))  # type: ignore[arg-type]
        calls.append(path)
        return real(path, source_df, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(delta, "insert_unless_taken", stream_commits_first)
    second = ingest.ingest(spark, config, input_path=str(tmp_path / "second.csv"))
    assert calls.count(bronze) == 1
    assert second["rows_read"] == second["accepted"] + second["duplicates"] + second["quarantined"]
    assert second["duplicates"] >= 100  # the stream's
    assert _bronze_is_each_event_once(spark, config) == first["accepted"] + 100 + second["accepted"]
    _silver_is_a_recompute_of_bronze(spark, config)


def test_overlapping_ingests_of_one_input_keep_each_event_once(spark: SparkSession, tmp_path: Path) -> None:
    """Two ingests of the same file at once (threads on one session: two Delta writers)."""
    from concurrent.futures import ThreadPoolExecutor

    from clickrec.generate import generate_clickstream

    config = make_config(tmp_path, ingest={"data_docs": False})
    generate_clickstream(tmp_path / "seed.csv", events=300, seed=9)
    generate_clickstream(tmp_path / "day.csv", events=1500, seed=10)
    ingest.ingest(spark, config, input_path=str(tmp_path / "seed.csv"))  # bronze exists: both update it
    before = _bronze_is_each_event_once(spark, config)
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(ingest.ingest, spark, config, input_path=str(tmp_path / "day.csv")) for _ in range(2)]
        a, b = (r.result() for r in runs)
    assert a["rows_read"] == b["rows_read"] and a["quarantined"] == b["quarantined"]
    new = a["rows_read"] - a["quarantined"] - min(a["duplicates"], b["duplicates"])
    assert a["accepted"] + b["accepted"] == new  # between them, each new event once
    assert _bronze_is_each_event_once(spark, config) == before + new
    _silver_is_a_recompute_of_bronze(spark, config)
