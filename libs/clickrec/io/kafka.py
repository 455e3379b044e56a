"""Kafka adapter (kafka-python): option building is pure and testable without a broker.

kafka-python sends the `models` announcement and `clickrec replay`'s clickstream events; the
clickstream topic is read by Spark's Kafka source, whose options are built here too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from clickrec.config import KafkaConfig
from clickrec.errors import ServiceError

log = logging.getLogger(__name__)


def producer_options(kafka: KafkaConfig, *, client_id: str = "clickrec", timeout_seconds: float = 30.0) -> dict[str, Any]:
    """KafkaProducer keyword arguments for a durable, ordered producer (values sent as bytes).

    acks=all and one request in flight per connection: an announcement is acknowledged by the
    broker before the job reports success, and retries cannot reorder two announcements.
    Raises ServiceError when kafka.bootstrap_servers is not set.
    """
    if not kafka.bootstrap_servers:
        raise ServiceError("config key 'kafka.bootstrap_servers' is null: no Kafka broker to send to")
    timeout_ms = int(timeout_seconds * 1000)
    return {
        "bootstrap_servers": [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()],
        "client_id": client_id,
        "acks": "all",
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 0,
        "request_timeout_ms": min(timeout_ms, 30000),
        "max_block_ms": timeout_ms,
    }


def encode_json(value: dict[str, Any]) -> bytes:
    """The wire form of a message: compact UTF-8 JSON with sorted keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


def encode_key(key: str | None) -> bytes | None:
    """UTF-8 key bytes (None stays None: the partitioner then picks)."""
    return None if key is None else key.encode("utf-8")


def send_json(kafka: KafkaConfig, topic: str, value: dict[str, Any], *, key: str | None = None,
              timeout_seconds: float = 30.0) -> dict[str, Any]:
    """Send one JSON message and wait for the broker's ack; return its topic, partition, offset.

    Raises ServiceError naming the servers and the topic when the broker cannot be reached or
    does not acknowledge in time.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    options = producer_options(kafka, timeout_seconds=timeout_seconds)
    producer = None
    try:
        producer = KafkaProducer(**options)
        meta = producer.send(topic, value=encode_json(value), key=encode_key(key)).get(timeout=timeout_seconds)
        producer.flush(timeout=timeout_seconds)
    except KafkaError as exc:
        raise ServiceError(
            f"Kafka at {kafka.bootstrap_servers} did not accept the message on topic '{topic}': "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if producer is not None:
            producer.close(timeout=5)
    log.info("sent to %s[%d]@%d", meta.topic, meta.partition, meta.offset)
    return {"topic": meta.topic, "partition": meta.partition, "offset": meta.offset}


# --- the clickstream topic: replay (producer) and Spark's Kafka source options -----------------


def stream_source_options(kafka: KafkaConfig, *, topic: str, starting_offsets: str,
                          max_offsets_per_trigger: int | None, fail_on_data_loss: bool) -> dict[str, str]:
    """Options of Spark's Kafka source for `clickrec stream` (pure; raises ServiceError without Kafka)."""
    if not kafka.bootstrap_servers:
        raise ServiceError("config key 'kafka.bootstrap_servers' is null: `clickrec stream` needs a Kafka broker")
    options = {
        "kafka.bootstrap.servers": kafka.bootstrap_servers,
        "subscribe": topic,
        "startingOffsets": starting_offsets,
        "failOnDataLoss": str(fail_on_data_loss).lower(),
    }
    if max_offsets_per_trigger is not None:
        options["maxOffsetsPerTrigger"] = str(max_offsets_per_trigger)
    return options


def send_events(
    kafka: KafkaConfig,
    topic: str,
    events: Iterable[tuple[str | None, bytes]],
    *,
    rate: float,
    on_progress: Callable[[int, float], None] | None = None,
    progress_every: int = 1000,
    timeout_seconds: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Send (key, JSON bytes) events at `rate` per second (0: unthrottled); wait for every ack.

    Pacing is against the start time (event n leaves at start + n/rate), so short stalls are
    caught up rather than accumulated. Returns {"sent", "seconds", "rate"}. Raises ServiceError
    when the broker cannot be reached or fails to acknowledge.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    options = producer_options(kafka, client_id="clickrec-replay", timeout_seconds=timeout_seconds)
    # Values are already JSON bytes; a short linger batches sends without delaying them much.
    options.update(linger_ms=5)
    sent = 0
    producer = None
    started = clock()
    try:
        producer = KafkaProducer(**options)
        futures = []
        for key, value in events:
            if rate > 0:
                wait = started + sent / rate - clock()
                if wait > 0:
                    time.sleep(wait)
            futures.append(producer.send(topic, value=value, key=encode_key(key)))
            sent += 1
            if on_progress is not None and sent % progress_every == 0:
                on_progress(sent, clock() - started)
            if len(futures) >= 10_000:
                for f in futures:
                    f.get(timeout=timeout_seconds)
                futures.clear()
        producer.flush(timeout=timeout_seconds)
        for f in futures:
            f.get(timeout=timeout_seconds)
    except KafkaError as exc:
        raise ServiceError(
            f"Kafka at {kafka.bootstrap_servers} did not accept event {sent} on topic '{topic}': "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        if producer is not None:
            producer.close(timeout=5)
    seconds = clock() - started
    if on_progress is not None:
        on_progress(sent, seconds)
    return {"sent": sent, "seconds": round(seconds, 3),
            "events_per_second": round(sent / seconds, 1) if seconds > 0 else None}


def ensure_topic(kafka: KafkaConfig, topic: str, *, partitions: int = 1, timeout_seconds: float = 30.0) -> bool:
    """Create `topic` when the broker lacks it; True when it was created.

    Spark's Kafka source fails a query whose topic is still being auto-created
    (UnknownTopicOrPartition), so the stream makes sure its topic exists before it starts.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    if not kafka.bootstrap_servers:
        raise ServiceError("config key 'kafka.bootstrap_servers' is null: no Kafka broker")
    admin = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers.split(","), client_id="clickrec-admin",
                                 request_timeout_ms=int(timeout_seconds * 1000))
        if topic in admin.list_topics():
            return False
        admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])
        return True
    except TopicAlreadyExistsError:
        return False
    except KafkaError as exc:
        raise ServiceError(f"Kafka at {kafka.bootstrap_servers}: cannot check or create topic '{topic}': "
                           f"{type(exc).__name__}: {exc}") from exc
    finally:
        if admin is not None:
            admin.close()
