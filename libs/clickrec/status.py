"""`clickrec status`: every table's path, Delta version and row count, the model aliases, live
leases, and the stream query's latest progress."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io import leases
from clickrec.io.lake import Lake


def table_status(lake: Lake, table: str) -> dict[str, Any]:
    """Path, version and row count of one table; `exists: false` when it is absent."""
    dt = lake.open(table)
    path = lake.uri(table)
    if dt is None:
        return {"table": table, "path": path, "exists": False, "version": None, "rows": None}
    rows = dt.to_pyarrow_dataset().count_rows()
    return {"table": table, "path": path, "exists": True, "version": dt.version(), "rows": rows}


def model_status(config: ClickrecConfig) -> dict[str, Any]:
    """Versions behind the `champion` and `challenger` aliases, without creating a store."""
    uri = config.mlflow.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.exists():
            return {"model_name": config.mlflow.model_name, "champion": None, "challenger": None}
    from clickrec.errors import ServiceError
    from clickrec.tracking import Tracking

    try:
        return {"model_name": config.mlflow.model_name, **Tracking(config.mlflow).alias_versions()}
    except ServiceError as exc:  # the tables are still worth reporting
        return {"model_name": config.mlflow.model_name, "error": str(exc)}


STREAM_FIELDS = ("batch_id", "timestamp", "num_input_rows", "processed_rows_per_second", "batch_duration_ms",
                 "offsets_behind_latest")


def stream_status(config: ClickrecConfig) -> dict[str, Any] | None:
    """The stream query's latest progress, from the file its listener keeps on a local lake.

    None when the query never ran here (or the lake is on an object store, where the log and
    Spark's metrics carry it). `seconds_since` is how long ago that batch was reported: a
    running query reports after every batch that had events, so a large value means it is
    stopped, stuck, or has had no new events since.
    """
    from clickrec.stream import metrics_path

    path = metrics_path(config)
    if "://" in path or not Path(path).is_file():
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        latest = data["latest"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"query": config.stream.query_name, "metrics_file": path, "error": f"unreadable: {exc}"}
    out = {"query": data.get("query"), "metrics_file": path, **{k: latest.get(k) for k in STREAM_FIELDS}}
    try:
        reported = datetime.fromisoformat(str(latest.get("timestamp")).replace("Z", "+00:00"))
        out["seconds_since"] = round((datetime.now(UTC) - reported).total_seconds(), 1)
    except ValueError:
        out["seconds_since"] = None
    return out


def collect_status(config: ClickrecConfig) -> dict[str, Any]:
    """The whole status object printed by `clickrec status`."""
    lake = Lake.from_config(config)
    return {
        "lake_root": config.lake.root,
        "tables": [table_status(lake, t) for t in C.ALL_TABLES],
        "models": model_status(config),
        # a live lease is why the stream holds its bronze, silver or gold commits (clickrec.io.leases)
        "leases": [{**r, "until": str(r["until"])} for r in leases.live(lake, C.ALL_TABLES)],
        # the heartbeats of the running streams (what single_writer mode refuses batch jobs beside)
        "live_streams": [{**r, "until": str(r["until"])} for r in leases.live_streams(lake)],
        "stream": stream_status(config),
    }
