"""Helpers for the tests against the real services (MinIO)."""

from __future__ import annotations

from clickrec.services import LAKE_BUCKET, ServiceProcess


def objects(minio: ServiceProcess, prefix: str) -> list[str]:
    """Names of the objects under `prefix` in the lake bucket, read by a client of MinIO's own."""
    from minio import Minio

    client = Minio(minio.url.removeprefix("http://"), access_key=minio.env["AWS_ACCESS_KEY_ID"],
                   secret_key=minio.env["AWS_SECRET_ACCESS_KEY"], secure=False)
    return [o.object_name for o in client.list_objects(LAKE_BUCKET, prefix=prefix, recursive=True)]
