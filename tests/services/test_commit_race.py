"""Spark and delta-rs writers racing for one table's commits on the real MinIO lose nothing.

With s3.commit: conditional_put (the default) both engines commit `_delta_log/<v>.json` with a
put-if-absent, so a writer that lost the race for a version learns it and retries. The race
(benchmarks/commit_race.py): 2 Spark writers (each its own JVM) and 1 delta-rs writer commit
small batches for 60 s, alternating blind appends and insert-only MERGEs, redoing a lost
conflict as the jobs do. The same race with s3.commit: single_writer lost a delta-rs commit to
Spark's unconditional PUT in each of its 60 s runs, and this test then fails on `lost`
(docs/benchmarks.md, "Concurrent commits on MinIO").
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from benchmarks.commit_race import RaceSpec, run_race

from clickrec.services import LAKE_BUCKET, ServiceProcess

pytestmark = pytest.mark.slow

RACE_SECONDS = 60.0


def test_racing_spark_and_delta_rs_writers_lose_no_commit(minio_env: ServiceProcess, tmp_path: Path) -> None:
    spec = RaceSpec(
        endpoint=minio_env.url,
        table=f"s3a://{LAKE_BUCKET}/commit-race-{uuid.uuid4().hex[:8]}/t",
        mode="conditional_put",
        seconds=RACE_SECONDS,
        spark_writers=2,
        rs_writers=1,
        warmup=1,  # an append per writer brings each JVM up; the MERGE path warms up in the race
        work_dir=str(tmp_path / "race"),
    )
    result = run_race(spec)
    summary = json.dumps({k: result[k] for k in ("commits", "conflicts", "gave_up", "errors", "latency_s",
                                                  "versions", "raced", "startup_s", "race_s")})

    assert result["version_gaps"] == [], summary
    assert result["lost"] == [], summary
    assert result["doubled"] == [], summary
    assert result["unexpected"] == [], summary
    assert result["unreported_commits"] == [], summary
    assert result["other_log_objects"] == [], summary  # no temporary commit files left behind
    assert result["errors"] == {"spark": {}, "delta-rs": {}}, summary  # every failure was a conflict Delta reported
    assert result["race_s"] >= RACE_SECONDS, summary
    # Both engines committed while the others did, and they raced: Spark's conditional PUT of a
    # version was refused because another writer had just committed it, and Delta moved on.
    assert result["commits"]["spark"] >= 1, summary
    assert result["commits"]["delta-rs"] >= 20, summary
    assert result["versions"] >= 40, summary
    assert result["raced"]["spark_version_races_lost"] >= 1, summary
    # Every reported batch is in the table exactly once, and nothing else is.
    committed = sum(result["commits"].values()) + sum(result["warmup_commits"].values())
    assert result["table_rows"] == committed * spec.rows, summary
