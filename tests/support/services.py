"""Helpers for the tests against the real services (MinIO)."""

from __future__ import annotations

import time
from pathlib import Path

from clickrec.services import LAKE_BUCKET, ServiceProcess, start_minio


def objects(minio: ServiceProcess, prefix: str, bucket: str = LAKE_BUCKET) -> list[str]:
    """Names of the objects under `prefix` in `bucket`, read by a client of MinIO's own."""
    from minio import Minio

    client = Minio(minio.url.removeprefix("http://"), access_key=minio.env["AWS_ACCESS_KEY_ID"],
                   secret_key=minio.env["AWS_SECRET_ACCESS_KEY"], secure=False)
    return [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True)]


class StoppableMinio:
    """A MinIO server of a test's own that can be stopped for a while and started again.

    It comes back as a restarted server does: on the same port, data folder and keys. While it
    is down, clients get refused connections (a SIGSTOPped server would instead leave their
    requests hanging until they time out).
    """

    def __init__(self, base: Path, bucket: str) -> None:
        self.base, self.bucket = base, bucket
        self.service = start_minio(base, buckets=(bucket,))

    def down_for(self, seconds: float) -> float:
        """Stop the server, wait `seconds`, start it again; how long it was unreachable."""
        old = self.service
        stopped = time.monotonic()
        old.stop()
        time.sleep(seconds)
        self.service = start_minio(self.base, port=old.ports["api"], access_key=old.env["AWS_ACCESS_KEY_ID"],
                                   secret_key=old.env["AWS_SECRET_ACCESS_KEY"], buckets=(self.bucket,))
        return time.monotonic() - stopped

    def delta_versions(self, prefix: str) -> int:
        """How many commits the Delta table at `prefix` (a key prefix in the bucket) has."""
        return sum(1 for n in objects(self.service, f"{prefix}/_delta_log/", self.bucket) if n.endswith(".json"))

    def stop(self) -> None:
        self.service.stop()
