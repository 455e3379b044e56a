"""Publish against the real KRaft broker: a consumer of the `models` topic gets the announcement."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer
from pyspark.sql import SparkSession

from clickrec.publish import publish
from clickrec.services import ServiceProcess
from tests.support.config import make_config
from tests.support.data import write_planted_lake
from tests.support.models import register_model


def test_publish_announces_on_the_models_topic(spark: SparkSession, kafka_service: ServiceProcess, tmp_path: Path) -> None:
    topic = f"models-{uuid.uuid4().hex[:8]}"
    config = make_config(tmp_path, kafka={"bootstrap_servers": kafka_service.url, "models_topic": topic},
                         publish={"n": 5})
    write_planted_lake(spark, config, users=60, items=60)
    version = register_model(spark, config, rank=3, max_iter=5, reg_param=0.05, alpha=10.0, alias="challenger")

    summary = publish(spark, config, alias="challenger")
    assert summary["announcement"]["sent"] is True and summary["announcement"]["topic"] == topic

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_service.url, auto_offset_reset="earliest")
    messages = []
    deadline = time.monotonic() + 30
    while not messages and time.monotonic() < deadline:  # stop at the first message, not on a timeout
        for batch in consumer.poll(timeout_ms=1000).values():
            messages.extend(batch)
    consumer.close()
    assert len(messages) == 1
    assert messages[0].key == b"challenger"
    body = json.loads(messages[0].value)
    assert body["event"] == "model_published"
    assert (body["model_name"], body["model_version"], body["alias"], body["variant"]) == (
        "clickrec-als", version, "challenger", "challenger")
    assert body["table_version"] == summary["tables"]["gold/recommendations"] == 0
    assert body["users"] == summary["users"] == 60 and body["published_at"].endswith("+00:00")
