"""Stores and servers that do not answer: a closed 127.0.0.1 port, and S3A pointed at one.

A closed port refuses connections at once, so a client with its retries capped fails in a
second or two; nothing here waits for a timeout.
"""

from __future__ import annotations

import socket
import uuid

from pyspark.sql import SparkSession


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (free a moment ago, and never listened on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# What `--set spark.conf.spark.hadoop.fs.s3a.<key>=...` gives a job's own session: no retries,
# so that S3A gives up on the first refused connection.
S3A_FAIL_FAST = {
    "attempts.maximum": "0",
    "retry.limit": "0",
    "retry.interval": "10ms",
    "connection.establish.timeout": "2s",
    "path.style.access": "true",
    "connection.ssl.enabled": "false",
    "endpoint.region": "us-east-1",
    "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    "access.key": "unused",
    "secret.key": "unused",
}


def unreachable_bucket(spark: SparkSession, endpoint: str) -> str:
    """A new bucket name whose S3A settings (per bucket, on the run's shared session) point at
    `endpoint` and fail fast; other buckets, and the other tests, are not touched."""
    bucket = f"unreachable-{uuid.uuid4().hex[:12]}"
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    for key, value in {"endpoint": endpoint, **S3A_FAIL_FAST}.items():
        conf.set(f"fs.s3a.bucket.{bucket}.{key}", value)
    return bucket
