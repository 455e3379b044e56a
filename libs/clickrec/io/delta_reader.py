"""JVM-free Delta reads with delta-rs (`deltalake`), for status, the library and the service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from clickrec.config import ClickrecConfig

if TYPE_CHECKING:
    from deltalake import DeltaTable


def reader_uri(config: ClickrecConfig, table: str) -> str:
    """Location of `table` as delta-rs expects it (s3a:// becomes s3://)."""
    root = config.lake.root.rstrip("/")
    if root.startswith("s3a://"):
        root = "s3://" + root[len("s3a://") :]
    elif "://" not in root:
        root = str(Path(root).resolve())
    return f"{root}/{table}"


def storage_options(config: ClickrecConfig) -> dict[str, str]:
    """delta-rs storage options for S3/MinIO from config and the environment's credentials."""
    s3 = config.s3
    if s3.endpoint is None:
        return {}
    opts = {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_REGION": s3.region,
        "AWS_ALLOW_HTTP": str(not s3.ssl_enabled).lower(),
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": str(not s3.path_style_access).lower(),
    }
    creds = s3.credentials()
    if creds is not None:
        opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"] = creds
    return opts


def open_table(config: ClickrecConfig, table: str, version: int | None = None) -> DeltaTable | None:
    """Open `table` read-only, or return None when it does not exist yet."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = reader_uri(config, table)
    if "://" not in uri and not (Path(uri) / "_delta_log").is_dir():
        return None
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options(config) or None)
    except TableNotFoundError:
        return None
