"""`clickrec status`: every table's path, Delta version and row count, the model aliases, live leases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io import leases
from clickrec.io.delta_reader import open_table, reader_uri


def table_status(config: ClickrecConfig, table: str) -> dict[str, Any]:
    """Path, version and row count of one table; `exists: false` when it is absent."""
    dt = open_table(config, table)
    path = reader_uri(config, table)
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
    from clickrec.tracking import alias_versions

    return {"model_name": config.mlflow.model_name, **alias_versions(config)}


def collect_status(config: ClickrecConfig) -> dict[str, Any]:
    """The whole status object printed by `clickrec status`."""
    return {
        "lake_root": config.lake.root,
        "tables": [table_status(config, t) for t in C.ALL_TABLES],
        "models": model_status(config),
        # a live lease is why the stream holds its silver or gold commits (clickrec.io.leases)
        "leases": [{**r, "until": str(r["until"])} for r in leases.live(config, C.ALL_TABLES)],
    }
