"""The real KRaft broker: kafka-python produce/consume, and Spark's Kafka source on the same topic."""

from __future__ import annotations

import json
import uuid

from kafka import KafkaConsumer, KafkaProducer
from pyspark.sql import SparkSession

from clickrec.services import ServiceProcess


def test_produce_consume_and_spark_read(spark: SparkSession, kafka_service: ServiceProcess) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    events = [{"n": i, "user_id": f"u{i % 3}"} for i in range(20)]
    producer = KafkaProducer(bootstrap_servers=kafka_service.url, value_serializer=lambda v: json.dumps(v).encode())
    for e in events:
        producer.send(topic, e)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_service.url, auto_offset_reset="earliest",
        consumer_timeout_ms=10000, value_deserializer=lambda b: json.loads(b),
    )
    got = [m.value for m in consumer]
    consumer.close()
    assert got == events

    df = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka_service.url)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    rows = sorted(json.loads(r["value"].decode())["n"] for r in df.select("value").collect())
    assert rows == list(range(20))
