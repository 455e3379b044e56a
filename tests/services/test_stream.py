"""`clickrec stream` against the real KRaft broker, in-process with --available-now.

One generated clickstream is cut in two: the first part is batch-ingested and a model is
registered as champion; the second part is replayed to Kafka and streamed in micro-batches of
at most 700 events, so sessions and users span the batch/stream boundary and several
micro-batches. A second lake batch-ingests the whole file: silver must come out the same.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.generate import generate_clickstream
from clickrec.ingest import ingest, recompute_interactions
from clickrec.io.kafka import send_events
from clickrec.io.lake import Lake
from clickrec.replay import replay
from clickrec.services import ServiceProcess
from clickrec.status import collect_status
from clickrec.stream import checkpoint_path, metrics_path, run_stream
from tests.support.config import make_config
from tests.support.models import register_model
from tests.support.stream import (
    SILVER_VALUE_COLUMNS,
    assert_ids_match_index,
    assert_same,
    gold_lists,
    silver_values,
    split_csv,
)

EVENTS = 4000
PER_BATCH = 700


def stream_config(tmp: Path, kafka: ServiceProcess, topic: str, **extra: Any) -> ClickrecConfig:
    return make_config(
        tmp, kafka={"bootstrap_servers": kafka.url, "clickstream_topic": topic},
        stream={"max_offsets_per_trigger": PER_BATCH, "trigger_seconds": 0.2, "query_name": "refresh-test"},
        ingest={"data_docs": False}, publish={"n": 10}, **extra,
    )


@pytest.fixture(scope="module")
def world(spark: SparkSession, kafka_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("stream")
    topic = f"clickstream-{uuid.uuid4().hex[:8]}"
    config = stream_config(tmp / "stream", kafka_service, topic)
    source, first, second = tmp / "all.csv", tmp / "first.csv", tmp / "second.csv"
    generate_clickstream(source, events=EVENTS, seed=5)
    split_csv(source, first, second, 0.6)
    ingest(spark, config, input_path=str(first))
    version = register_model(spark, config)
    sent = replay(config, input_path=str(second), rate=0)
    summary = run_stream(spark, config, available_now=True)
    batch = make_config(tmp / "batch", ingest={"data_docs": False})
    ingest(spark, batch, input_path=str(source))  # the same events, in one batch
    return {"config": config, "batch": batch, "summary": summary, "sent": sent, "version": version,
            "second": second, "topic": topic, "kafka": kafka_service}


def test_stream_equals_batch_ingest(spark: SparkSession, world: dict[str, Any]) -> None:
    config, batch, summary = world["config"], world["batch"], world["summary"]
    assert summary["batches"] >= world["sent"]["sent"] // PER_BATCH >= 2  # several micro-batches
    assert summary["rows_read"] == world["sent"]["sent"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    bronze = Lake.from_config(config).read(spark, C.BRONZE_EVENTS)
    batch_bronze = Lake.from_config(batch).read(spark, C.BRONZE_EVENTS)
    assert bronze.count() == bronze.select(C.EVENT_ID).distinct().count() == batch_bronze.count()
    assert_same(bronze.select(C.EVENT_ID), batch_bronze.select(C.EVENT_ID))
    assert_same(silver_values(spark, config), silver_values(spark, batch))
    assert_same(silver_values(spark, config), recompute_interactions(spark, config).select(*SILVER_VALUE_COLUMNS))
    assert_ids_match_index(spark, config)


def test_gold_holds_one_fold_in_list_per_streamed_user(spark: SparkSession, world: dict[str, Any]) -> None:
    config, summary = world["config"], world["summary"]
    gold = Lake.from_config(config).read(spark, C.GOLD_RECOMMENDATIONS)
    assert gold.groupBy(C.USER_ID, C.VARIANT).count().where(F.col("count") > 1).count() == 0
    rows = gold_lists(spark, config)
    streamed_users = {r[C.USER_ID] for r in spark.read.csv(str(world["second"]), header=True).select(C.USER_ID).distinct().collect()}
    assert summary["users_refreshed"] >= len(rows) > 0.9 * len(streamed_users)
    assert set(rows) <= streamed_users
    for row in rows.values():
        assert row[C.SOURCE] == "stream" and row[C.MODEL_VERSION] == world["version"]
        assert [i[C.RANK] for i in row[C.ITEMS]] == list(range(1, len(row[C.ITEMS]) + 1))
        assert len(row[C.ITEMS]) == 10
    metrics = json.loads(Path(metrics_path(config)).read_text())
    latest = metrics["latest"]
    assert latest["batch_id"] >= 2 and latest["processed_rows_per_second"] is not None
    assert latest["offsets_behind_latest"] == 0
    shown = collect_status(config)["stream"]  # what `clickrec status` prints about the query
    assert shown["query"] == config.stream.query_name and shown["batch_id"] == latest["batch_id"]
    assert shown["num_input_rows"] == latest["num_input_rows"] and 0 <= shown["seconds_since"] < 3600


def test_purchase_and_new_user_within_the_next_micro_batch(spark: SparkSession, world: dict[str, Any]) -> None:
    config = world["config"]
    before = gold_lists(spark, config)
    user = sorted(before)[0]
    top_item = before[user][C.ITEMS][0][C.ITEM_ID]
    # a brand-new user views five items of the category the model knows most items of
    items = spark.read.csv(str(world["second"]), header=True).select(C.PRODUCT_ID, C.CATEGORY_ID).distinct()
    known = {r[C.SOURCE_ID] for r in Lake.from_config(config).read(spark, C.SILVER_ITEM_INDEX).collect()}
    by_cat: dict[str, list[str]] = {}
    for r in items.collect():
        if r[C.PRODUCT_ID] in known:
            by_cat.setdefault(r[C.CATEGORY_ID], []).append(r[C.PRODUCT_ID])
    category = max(sorted(by_cat), key=lambda c: len(by_cat[c]))
    viewed = sorted(by_cat[category])[:5]
    category_of = {r[C.PRODUCT_ID]: r[C.CATEGORY_ID] for r in items.collect()}

    def event(etype: str, product: str, uid: str, minute: int) -> tuple[str, bytes]:
        body = {"event_time": f"2019-12-30 10:{minute:02d}:00 UTC", "event_type": etype, "product_id": product,
                "category_id": category_of.get(product, ""), "category_code": "", "brand": "", "price": "9.99",
                "user_id": uid, "user_session": f"s-{uid}"}
        return uid, json.dumps(body).encode()

    new_user = "new-user-42"
    events = [event("purchase", top_item, user, 0)] + [event("view", p, new_user, m) for m, p in enumerate(viewed)]
    send_events(config.kafka, world["topic"], events, rate=0)
    assert new_user not in before
    summary = run_stream(spark, config, available_now=True)
    assert summary["batches"] == 1 and summary["rows_read"] == 6
    after = gold_lists(spark, config)
    assert top_item not in [i[C.ITEM_ID] for i in after[user][C.ITEMS]]
    assert after[user][C.UPDATED_AT] > before[user][C.UPDATED_AT]
    mine = [i[C.ITEM_ID] for i in after[new_user][C.ITEMS]]
    assert len(mine) == 10
    share = Counter(category_of.get(i) == category for i in mine)[True] / len(mine)
    assert share >= 0.5, (category, mine)


def test_a_reset_checkpoint_neither_loses_nor_doubles_events(spark: SparkSession, world: dict[str, Any]) -> None:
    # a new checkpoint restarts batch ids at 0, which bronze's (query, batch id) tags already
    # hold: the event_ids decide what is appended, so replayed events add nothing and new ones land
    import shutil

    config = world["config"]
    lake = Lake.from_config(config)
    bronze_path = lake.path(C.BRONZE_EVENTS)
    before = spark.read.format("delta").load(bronze_path).count()
    # a rejected row before the reset records this query's batch ids in the quarantine's log
    send_events(config.kafka, world["topic"], [("reset-bad", b"not json before the reset")], rate=0)
    assert run_stream(spark, config, available_now=True)["quarantined"] == 1
    shutil.rmtree(checkpoint_path(config))
    fresh = [(f"reset-{n}", json.dumps({
        "event_time": f"2019-12-31 09:0{n}:00 UTC", "event_type": "view", "product_id": "reset-item",
        "category_id": "", "category_code": "", "brand": "", "price": "1.0", "user_id": f"reset-{n}",
        "user_session": f"s-reset-{n}"}).encode()) for n in range(3)]
    fresh.append(("reset-bad", b"not json after the reset"))  # a batch id seen before: still quarantined
    send_events(config.kafka, world["topic"], fresh, rate=0)
    summary = run_stream(spark, config, available_now=True)  # re-reads the topic from the start
    assert summary["accepted"] == 3 and summary["quarantined"] >= 2
    assert summary["rows_read"] == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    held = lake.read(spark, C.BRONZE_QUARANTINE)
    for line in ("not json before the reset", "not json after the reset"):  # once each
        assert held.where(F.col(C.RAW_LINE) == line).count() == 1, line
    bronze = spark.read.format("delta").load(bronze_path)
    assert bronze.count() == bronze.select(C.EVENT_ID).distinct().count() == before + 3
    assert bronze.where(F.col(C.USER_ID).startswith("reset-")).count() == 3


def test_a_failed_batch_ends_the_stream_with_its_own_exit_code(
    spark: SparkSession, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the query reports a foreachBatch error as text; the command must still exit 6 for a lost
    # commit race (not 2, "bad input"), so a scheduler can tell a retryable failure
    from clickrec.errors import ConcurrentWriteError
    from clickrec.microbatch import BatchProcessor

    def lose_the_race(self: BatchProcessor, staged: Any, batch_id: int) -> None:
        raise ConcurrentWriteError("silver/interactions: lost the commit race 5 times")

    monkeypatch.setattr(BatchProcessor, "_process", lose_the_race)
    config = world["config"]
    event = {"event_time": "2019-12-31 10:00:00 UTC", "event_type": "view", "product_id": "fail-item",
             "category_id": "", "category_code": "", "brand": "", "price": "1.0", "user_id": "fail-1",
             "user_session": "s-fail-1"}
    send_events(config.kafka, world["topic"], [("fail-1", json.dumps(event).encode())], rate=0)
    with pytest.raises(ConcurrentWriteError, match="lost the commit race") as caught:
        run_stream(spark, config, available_now=True)
    assert caught.value.exit_code == 6
