"""Pure parts of publish: Kafka producer options and message, exclusion, id mapping, popular list."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.config import KafkaConfig, build_config
from clickrec.errors import ConfigError, ServiceError
from clickrec.io.kafka import encode_json, encode_key, producer_options
from clickrec.publish import model_message
from clickrec.transforms.recommendations import (
    attach_user_ids,
    exclusion_pairs,
    popular_items,
    rank_rows,
    serving_rows,
)

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


def test_producer_options_are_durable_and_need_a_broker() -> None:
    opts = producer_options(KafkaConfig(bootstrap_servers="a:9092, b:9092"), timeout_seconds=10)
    assert opts["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert opts["acks"] == "all" and opts["max_in_flight_requests_per_connection"] == 1
    assert opts["max_block_ms"] == 10000 and encode_key("champion") == b"champion"
    with pytest.raises(ServiceError, match=r"kafka\.bootstrap_servers"):
        producer_options(KafkaConfig())


def test_model_message_says_what_was_published() -> None:
    msg = model_message(model_name="m", model_version=3, variant="challenger", rollback=False,
                        table_version=7, popular_table_version=2, users=10, published_at=WHEN)
    wire = json.loads(encode_json(msg))
    assert wire == {**msg, "published_at": "2026-01-02T03:04:05+00:00"}
    assert (wire["model_version"], wire["alias"], wire["variant"], wire["table_version"]) == (3, "challenger", "challenger", 7)
    assert wire["event"] == "model_published" and wire["table"] == C.GOLD_RECOMMENDATIONS


def test_publish_and_serve_config_is_validated_by_key() -> None:
    cfg = build_config({})
    assert (cfg.publish.n, cfg.publish.exclude, cfg.serve.host) == (10, "bought", "127.0.0.1")
    with pytest.raises(ConfigError, match=r"publish\.exclude"):
        build_config({}, ["publish.exclude=clicked"])
    with pytest.raises(ConfigError, match=r"serve\.max_n"):
        build_config({}, ["serve.max_n=0"])
    with pytest.raises(ConfigError, match=r"'publish\.top': unknown key"):
        build_config({"publish": {"top": 5}})


def test_exclusion_is_bought_or_seen(spark: SparkSession) -> None:
    inter = spark.createDataFrame([(0, 1, 0), (0, 2, 1), (1, 1, 2)], f"{C.USER_IDX} int, {C.ITEM_IDX} int, {C.PURCHASES} long")
    assert sorted(tuple(r) for r in exclusion_pairs(inter, exclude="bought").collect()) == [(0, 2), (1, 1)]
    assert sorted(tuple(r) for r in exclusion_pairs(inter, exclude="seen").collect()) == [(0, 1), (0, 2), (1, 1)]


def test_rank_rows_maps_ids_and_keeps_order(spark: SparkSession) -> None:
    recs = spark.createDataFrame(
        [(0, [5, 3, 9], [0.9, 0.5, 0.1]), (1, [], [])],
        f"{C.USER_IDX} int, items array<int>, scores array<float>",
    )
    items = spark.createDataFrame([("p5", 5), ("p3", 3), ("p9", 9)], f"{C.SOURCE_ID} string, {C.IDX} int")
    users = spark.createDataFrame([("alice", 0), ("bob", 1)], f"{C.SOURCE_ID} string, {C.IDX} int")
    lists = recs.transform(rank_rows, item_index_df=items).transform(attach_user_ids, user_index_df=users)
    rows = serving_rows(lists, variant="champion", model_name="m", model_version=2, updated_at=WHEN)
    got = {r[C.USER_ID]: r.asDict(recursive=True) for r in rows.collect()}
    assert [(i[C.ITEM_ID], i[C.RANK]) for i in got["alice"][C.ITEMS]] == [("p5", 1), ("p3", 2), ("p9", 3)]
    assert got["alice"][C.ITEMS][0][C.SCORE] == pytest.approx(0.9)
    assert got["bob"][C.ITEMS] == []  # everything excluded: a known user with an empty list
    assert (got["alice"][C.VARIANT], got["alice"][C.SOURCE], got["alice"][C.MODEL_VERSION]) == ("champion", C.SOURCE_BATCH, 2)
    assert rows.columns == [C.USER_ID, C.VARIANT, C.ITEMS, C.MODEL_NAME, C.MODEL_VERSION, C.SOURCE, C.UPDATED_AT]


def test_popular_items_counts_distinct_users_ties_by_id(spark: SparkSession) -> None:
    inter = spark.createDataFrame(
        [("u1", "b"), ("u2", "b"), ("u1", "a"), ("u2", "a"), ("u3", "c"), ("u1", "b")],
        f"{C.USER_ID} string, {C.ITEM_ID} string",
    )
    row = popular_items(inter, n=2, variant="champion", model_name="m", model_version=1, updated_at=WHEN).first()
    assert [(i[C.ITEM_ID], i[C.SCORE], i[C.RANK]) for i in row[C.ITEMS]] == [("a", 2.0, 1), ("b", 2.0, 2)]
    assert row[C.SOURCE] == C.SOURCE_POPULAR and row[C.VARIANT] == "champion"
