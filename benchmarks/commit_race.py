"""Concurrent commits to one Delta table on S3/MinIO: Spark and delta-rs writers racing.

    .venv/bin/python -m benchmarks.commit_race race --endpoint URL --mode conditional_put --seconds 60
    .venv/bin/python -m benchmarks.commit_race bench --seconds 60 --rs-pause 0 0.5 [--markdown docs/benchmarks.md]

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the endpoint from --endpoint
(default $CLICKREC_S3_ENDPOINT). `race` prints one race's result as JSON (exit code 1 when a
check failed); `bench` runs a race per commit mode (s3.commit) and delta-rs pause and returns
the section of docs/benchmarks.md; without an endpoint it starts a MinIO of its own under
.bench/commit_race/. `bench --help` and `race --help` list the options.

A race: the harness creates the table with delta-rs (version 0, partitioned by engine), then
starts every writer as a process of its own: each Spark writer a Python process with its own
JVM, its session built by `clickrec.spark.build_spark_session` (local[1], 1 GiB driver, s3.commit
= the mode), each delta-rs writer a Python process using `Lake.storage_options`. A writer warms
up (an append and a MERGE by default), says it is ready and waits for the start file, so JVM
start-up is not part of the race; then, for `seconds`, it commits batches of `rows` rows tagged
(engine, writer, batch, attempt, seq), alternating a blind append and an insert-only MERGE on
(batch, seq) within its engine's partition. A commit that loses to a conflicting one is redone
by `clickrec.io.conflicts.retry_on_conflict`, as the jobs do (with a new attempt number, so a
failed attempt that left rows shows). Each writer logs every batch it saw committed (attempt,
version, seconds from the first attempt to the commit) to a JSON-lines file; every commit
carries its batch id as commitInfo.userMetadata.

Afterwards the harness lists `_delta_log/` and reads the table (delta-rs, latest version):

- version gaps: a version missing between 0 and the last one;
- lost: a batch a writer reported committed whose rows are not all in the table;
- doubled: a reported batch with a row more than once, or whose id is in more than one commit;
- unexpected: rows of a batch, or of an attempt, that no writer reported committed;
- commits, conflicts (retried attempts), give-ups and other errors per engine, and p50/p95 of
  the commit latency per engine (first attempt's start to the successful commit, retries
  included).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
WORK = Path(".bench/commit_race")
ENGINES = ("spark", "delta-rs")
KINDS = ("append", "merge")
COLUMNS = ("engine", "writer", "batch", "attempt", "seq")
_VERSION_FILE = re.compile(r"^(\d{20})\.json$")
# Written to a writer's log when its race starts; Delta's commit attempts after it are counted.
RACE_MARK = "=== commit race starts"
# Delta's OptimisticTransaction (INFO) logs each version it tries to commit and each it commits;
# every other attempt found its version taken (a conditional PUT answered 412, or
# S3SingleDriverLogStore's existence check saw the file) and was retried at a later version.
_SPARK_ATTEMPT = "Attempting to commit version"
_SPARK_COMMITTED = "Committed delta #"


@dataclass
class RaceSpec:
    """One race: where, which commit mode, how long, how many writers of each engine."""

    endpoint: str
    table: str  # s3a://<bucket>/<prefix> (or s3://): the Delta table the writers share
    mode: str = "conditional_put"  # s3.commit (clickrec.choices.CommitMode)
    seconds: float = 60.0
    spark_writers: int = 2
    rs_writers: int = 1
    rows: int = 3  # rows per batch
    attempts: int = 5  # retry_on_conflict's attempts per batch (the jobs' default)
    # After each batch a writer sleeps a uniform 0..pause seconds, per engine. delta-rs commits a
    # small batch in tens of milliseconds: unpaced it commits about 10 times a second, and a
    # Spark commit, which checks every commit that came in since it read the table, chases the
    # latest version for tens of seconds. 0.5 s: about 2 delta-rs commits a second per writer.
    spark_pause: float = 0.0
    rs_pause: float = 0.5
    spark_memory: str = "1g"
    # Batches each writer commits before it says it is ready, outside the race: 2 warms up
    # both an append and a MERGE in a fresh JVM, 1 only the append.
    warmup: int = 2
    work_dir: str = str(WORK / "run")
    startup_timeout: float = 300.0  # for every writer to be ready (JVMs start in parallel)

    @property
    def spark_path(self) -> str:
        return "s3a://" + self.table.split("://", 1)[1]

    @property
    def rs_uri(self) -> str:
        return "s3://" + self.table.split("://", 1)[1]

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.table.split("://", 1)[1].partition("/")
        return bucket, prefix.rstrip("/")


# --- configs shared by the harness and the writers ---------------------------------------------


def _config(spec: RaceSpec, writer: str = "harness") -> Any:
    from clickrec.config import build_config

    work = Path(spec.work_dir).resolve()
    bucket, prefix = spec.bucket_and_prefix
    root, _, _ = prefix.rpartition("/")
    return build_config({
        "spark": {
            "master": "local[1]",
            "app_name": f"commit-race-{writer}",
            "driver_memory": spec.spark_memory,
            "shuffle_partitions": 1,
            "ui_enabled": False,
            "log_level": "ERROR",
            "checkpoint_dir": str(work / writer / "checkpoints"),
            "conf": {"spark.local.dir": str(work / writer / "spark-local"),
                     "spark.ui.showConsoleProgress": "false"},
        },
        "lake": {"root": f"s3a://{bucket}/{root}" if root else f"s3a://{bucket}"},
        "s3": {"endpoint": spec.endpoint, "commit": spec.mode},
    })


def _storage_options(spec: RaceSpec) -> dict[str, str]:
    from clickrec.io.lake import Lake

    return dict(Lake.from_config(_config(spec)).storage_options)


def _arrow_batch(engine: str, writer: str, batch: str, attempt: int, rows: int) -> Any:
    import pyarrow as pa

    return pa.table({
        "engine": pa.array([engine] * rows, pa.string()),
        "writer": pa.array([writer] * rows, pa.string()),
        "batch": pa.array([batch] * rows, pa.string()),
        "attempt": pa.array([attempt] * rows, pa.int32()),
        "seq": pa.array(range(rows), pa.int32()),
    })


def _merge_condition(engine: str, batch: str) -> str:
    """Insert-only MERGE on (batch, seq) within the engine's partition.

    The partition literal is what Delta's conflict checks evaluate: a MERGE conflicts with the
    MERGEs of the same engine's other writers only. Without it every Spark MERGE (seconds long)
    conflicts with the delta-rs commits made meanwhile, which come many a second: Spark reads
    delta-rs' appends as not blind (their commitInfo has no isBlindAppend). The batch literal
    lets both engines skip every other batch's files by their min/max stats.
    """
    return (f"t.engine = '{engine}' AND t.batch = '{batch}' AND t.batch = s.batch "
            "AND t.seq = s.seq")


# --- the writers (each in a process of its own) ------------------------------------------------


class _SparkWriter:
    engine = "spark"

    def __init__(self, spec: RaceSpec, writer: str) -> None:
        from clickrec.spark import build_spark_session

        self.spark = build_spark_session(_config(spec, writer))
        self.path = spec.spark_path
        self.writer = writer
        log4j = self.spark.sparkContext._jvm.org.apache.logging.log4j  # type: ignore[union-attr]
        log4j.core.config.Configurator.setLevel("org.apache.spark.sql.delta.OptimisticTransaction",
                                                log4j.Level.INFO)

    def commit(self, kind: str, batch: str, attempt: int, rows: int) -> int | None:
        from delta.tables import DeltaTable

        spark = self.spark
        values = ", ".join(f"('{self.engine}', '{self.writer}', '{batch}', {attempt}, {seq})"
                           for seq in range(rows))
        # A VALUES list is a local relation in the JVM: no Python worker starts for it.
        source = spark.sql(f"SELECT * FROM VALUES {values} AS s(engine, writer, batch, attempt, seq)")
        spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", batch)
        if kind == "append":
            source.write.format("delta").mode("append").save(self.path)
        else:
            (DeltaTable.forPath(spark, self.path).alias("t")
             .merge(source.alias("s"), _merge_condition(self.engine, batch))
             .whenNotMatchedInsertAll().execute())
        version = spark.conf.get("spark.databricks.delta.lastCommitVersionInSession", None)
        return int(version) if version else None

    def close(self) -> None:
        self.spark.stop()


class _DeltaRsWriter:
    engine = "delta-rs"

    def __init__(self, spec: RaceSpec, writer: str) -> None:
        from deltalake import DeltaTable

        self.dt = DeltaTable(spec.rs_uri, storage_options=_storage_options(spec))
        self.writer = writer

    def commit(self, kind: str, batch: str, attempt: int, rows: int) -> int | None:
        from deltalake import CommitProperties, write_deltalake

        self.dt.update_incremental()
        data = _arrow_batch(self.engine, self.writer, batch, attempt, rows)
        props = CommitProperties(custom_metadata={"userMetadata": batch})
        if kind == "append":
            write_deltalake(self.dt, data, mode="append", commit_properties=props)
        else:
            (self.dt.merge(data, _merge_condition(self.engine, batch), source_alias="s", target_alias="t",
                           commit_properties=props)
             .when_not_matched_insert_all().execute())
        return int(self.dt.version())

    def close(self) -> None:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:300]


def _writer_main(spec_file: Path) -> None:
    """One writer: warm up, wait for the start, commit batches until the end, log each result."""
    import logging

    from clickrec.errors import ConcurrentWriteError
    from clickrec.io.conflicts import conflict_errors, retry_on_conflict

    logging.basicConfig(level=logging.ERROR)
    job = json.loads(spec_file.read_text())
    spec = RaceSpec(**job["spec"])
    writer, engine, files = job["writer"], job["engine"], job["files"]
    impl: _SparkWriter | _DeltaRsWriter = (
        _SparkWriter(spec, writer) if engine == "spark" else _DeltaRsWriter(spec, writer))
    conflicts = conflict_errors()
    out_file = Path(files["out"])

    def log(record: dict[str, Any]) -> None:
        with out_file.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"writer": writer, "engine": engine, **record}) + "\n")

    def one_batch(n: int, kind: str, phase: str) -> None:
        batch = f"{writer}-{n:06d}"
        started, tried = time.time(), [0]
        attempt_started = [started]
        lost_to: list[str] = []
        messages: list[str] = []

        def work(attempt: int) -> int | None:
            tried[0] = attempt
            attempt_started[0] = time.time()
            try:
                return impl.commit(kind, batch, attempt, spec.rows)
            except conflicts as exc:
                lost_to.append(type(exc).__name__)
                messages.append(_first_line(exc))
                raise

        base = {"batch": batch, "kind": kind, "phase": phase, "t0": started, "conflict_messages": messages}
        try:
            version = retry_on_conflict(work, what=batch, attempts=spec.attempts)
        except ConcurrentWriteError as exc:
            log({**base, "event": "gave_up", "attempt": tried[0], "conflicts": lost_to,
                 "error": _first_line(exc)})
            return
        except Exception as exc:  # not a conflict Delta reports: record it, go on
            log({**base, "event": "error", "attempt": tried[0], "conflicts": lost_to,
                 "error_type": f"{type(exc).__module__}.{type(exc).__name__}", "error": _first_line(exc)})
            return
        done = time.time()
        log({**base, "event": "committed", "attempt": tried[0], "version": version, "t1": done,
             "seconds": done - started, "last_attempt_seconds": done - attempt_started[0],
             "conflicts": lost_to})

    for n in range(spec.warmup):
        one_batch(n, KINDS[n % len(KINDS)], "warmup")
    Path(files["ready"]).write_text(str(time.time()))
    start_file = Path(files["start"])
    while not start_file.exists():
        time.sleep(0.05)
    window = json.loads(start_file.read_text())
    time.sleep(max(0.0, window["start"] - time.time()))
    print(RACE_MARK, file=sys.stderr, flush=True)
    n = spec.warmup
    while time.time() < window["end"]:
        one_batch(n, KINDS[(n - spec.warmup) % len(KINDS)], "race")  # the race starts with an append
        n += 1
        pause = spec.spark_pause if engine == "spark" else spec.rs_pause
        if pause:
            time.sleep(random.uniform(0, pause))
    impl.close()


# --- the harness ---------------------------------------------------------------------------------


def _minio(spec: RaceSpec) -> Any:
    from minio import Minio

    host = spec.endpoint.split("://", 1)[-1].rstrip("/")
    return Minio(host, access_key=os.environ["AWS_ACCESS_KEY_ID"],
                 secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                 secure=spec.endpoint.startswith("https://"))


def _create_table(spec: RaceSpec) -> None:
    from deltalake import CommitProperties, write_deltalake

    empty = _arrow_batch("harness", "harness", "create", 0, 0)
    write_deltalake(spec.rs_uri, empty, mode="error", partition_by=["engine"], storage_options=_storage_options(spec),
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": "create"}))


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the writer's process group (its JVM too), SIGKILL after 10 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start_writers(spec: RaceSpec, work: Path) -> list[dict[str, Any]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    writers = [("spark", f"s{i + 1}") for i in range(spec.spark_writers)]
    writers += [("delta-rs", f"r{i + 1}") for i in range(spec.rs_writers)]
    started = []
    for engine, writer in writers:
        files = {k: str(work / f"{writer}.{k}") for k in ("out", "ready", "log")}
        files["start"] = str(work / "start.json")
        job = work / f"{writer}.job.json"
        job.write_text(json.dumps({"spec": asdict(spec), "writer": writer, "engine": engine, "files": files}))
        with Path(files["log"]).open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.commit_race", "writer", str(job)], cwd=REPO_ROOT,
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append({"engine": engine, "writer": writer, "proc": proc, "files": files})
    return started


def _read_records(writers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    records = []
    for w in writers:
        path = Path(w["files"]["out"])
        if path.is_file():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def _spark_commit_attempts(writers: list[dict[str, Any]]) -> dict[str, int]:
    """Delta's commit attempts and commits in the Spark writers' logs since the race started."""
    counts = {"attempts": 0, "committed": 0}
    for w in writers:
        if w["engine"] != "spark":
            continue
        text = Path(w["files"]["log"]).read_text(errors="replace").split(RACE_MARK, 1)[-1]
        counts["attempts"] += text.count(_SPARK_ATTEMPT)
        counts["committed"] += text.count(_SPARK_COMMITTED)
    return counts


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _delta_log(spec: RaceSpec) -> dict[str, Any]:
    """The versions under _delta_log/, other objects there, and each commit's userMetadata."""
    client = _minio(spec)
    bucket, prefix = spec.bucket_and_prefix
    log_prefix = f"{prefix}/_delta_log/"
    versions, other = [], []
    for obj in client.list_objects(bucket, prefix=log_prefix, recursive=True):
        name = obj.object_name[len(log_prefix):]
        match = _VERSION_FILE.match(name)
        if match:
            versions.append(int(match.group(1)))
        else:
            other.append(name)
    commit_of: dict[int, dict[str, Any]] = {}
    for version in sorted(versions):
        response = client.get_object(bucket, f"{log_prefix}{version:020d}.json")
        try:
            body = response.read().decode()
        finally:
            response.close()
            response.release_conn()
        for line in body.splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                info = action["commitInfo"]
                commit_of[version] = {
                    "batch": info.get("userMetadata"),
                    "engine": "spark" if "Apache-Spark" in str(info.get("engineInfo")) else "delta-rs",
                    "operation": info.get("operation"),
                    # Spark: the version its transaction read; delta-rs: the versions it found
                    # taken and moved past. Both say the commit raced other writers.
                    "read_version": info.get("readVersion"),
                    "retries": (info.get("operationMetrics") or {}).get("num_retries"),
                }
    return {"versions": sorted(versions), "other": sorted(other), "commit_of": commit_of}


def _table_rows(spec: RaceSpec) -> list[tuple[str, str, str, int, int]]:
    from deltalake import DeltaTable

    table = DeltaTable(spec.rs_uri, storage_options=_storage_options(spec)).to_pyarrow_table(columns=list(COLUMNS))
    cols = [table.column(c).to_pylist() for c in COLUMNS]
    return list(zip(*cols, strict=True))


def verify(spec: RaceSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare what the writers reported with the table and its log (module docstring)."""
    log = _delta_log(spec)
    versions = log["versions"]
    last = versions[-1] if versions else -1
    gaps = sorted(set(range(last + 1)) - set(versions))
    rows = _table_rows(spec)
    by_batch: dict[str, Counter[tuple[int, int]]] = defaultdict(Counter)
    for _, _, batch, attempt, seq in rows:
        by_batch[batch][(attempt, seq)] += 1
    versions_of: dict[str, list[int]] = defaultdict(list)
    for version, info in log["commit_of"].items():
        versions_of[str(info["batch"])].append(version)

    committed = {r["batch"]: r for r in records if r["event"] == "committed"}
    lost, doubled, unexpected = [], [], []
    for batch, rec in sorted(committed.items()):
        seen = by_batch.get(batch, Counter())
        counts = [seen[(rec["attempt"], seq)] for seq in range(spec.rows)]
        in_log = sorted(versions_of.get(batch, []))
        detail = {"batch": batch, "engine": rec["engine"], "kind": rec["kind"], "attempt": rec["attempt"],
                  "reported_version": rec.get("version"), "commits_in_log": in_log,
                  "reported_version_now_holds": (log["commit_of"].get(rec["version"])
                                                 if rec.get("version") is not None else None)}
        if min(counts) == 0:
            lost.append({**detail, "rows_found": sum(counts)})
        if max(counts) > 1 or len(in_log) > 1:
            doubled.append({**detail, "row_counts": counts})
    for batch, seen in sorted(by_batch.items()):
        reported = committed.get(batch)
        stray = sorted({a for a, _ in seen if reported is None or a != reported["attempt"]})
        if stray:
            unexpected.append({"batch": batch, "attempts": stray, "reported": reported is not None,
                               "rows": sum(n for (a, _), n in seen.items() if a in stray),
                               "commits_in_log": sorted(versions_of.get(batch, []))})
    unreported_commits = sorted(v for v, info in log["commit_of"].items()
                                if info["batch"] not in committed and info["batch"] != "create")
    # How the race-phase commits (warm-ups left out) raced the others.
    race_batches = {b for b, r in committed.items() if r["phase"] == "race"}
    commits = [c for c in log["commit_of"].values() if c["batch"] in race_batches]
    behind = [v - c["read_version"] - 1 for v, c in log["commit_of"].items()
              if c["batch"] in race_batches and c["engine"] == "spark" and c["read_version"] is not None]
    raced = {
        "spark_commits_after_others": sum(1 for b in behind if b > 0),
        "spark_versions_behind_p50": percentile(behind, 50),
        "spark_versions_behind_max": max(behind, default=None),
        "delta_rs_version_retries": sum(int(c["retries"] or 0) for c in commits if c["engine"] == "delta-rs"),
    }
    return {"versions": len(versions), "last_version": last, "version_gaps": gaps,
            "other_log_objects": [n for n in log["other"] if not n.endswith((".checkpoint.parquet", ".crc"))
                                  and n != "_last_checkpoint"],
            "table_rows": len(rows), "lost": lost, "doubled": doubled, "unexpected": unexpected,
            "unreported_commits": unreported_commits, "raced": raced}


def summarize(spec: RaceSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Commits, conflicts, give-ups, errors and latency per engine (race phase only)."""
    out: dict[str, Any] = {"commits": {}, "commits_by_kind": {}, "warmup_commits": {}, "conflicts": {},
                           "conflict_types": {}, "gave_up": {}, "errors": {}, "latency_s": {}}
    for engine in ENGINES:
        mine = [r for r in records if r["engine"] == engine]
        race = [r for r in mine if r["phase"] == "race"]
        done = [r for r in race if r["event"] == "committed"]
        out["commits"][engine] = len(done)
        out["commits_by_kind"][engine] = dict(Counter(r["kind"] for r in done))
        out["warmup_commits"][engine] = sum(1 for r in mine if r["phase"] == "warmup" and r["event"] == "committed")
        out["conflicts"][engine] = sum(len(r.get("conflicts", [])) for r in mine)
        out["conflict_types"][engine] = dict(Counter(c for r in mine for c in r.get("conflicts", [])))
        out["gave_up"][engine] = sum(1 for r in mine if r["event"] == "gave_up")
        out["errors"][engine] = dict(Counter(f"{r['error_type']}: {r['error']}" for r in mine if r["event"] == "error"))
        seconds = [r["seconds"] for r in done]
        last = [r["last_attempt_seconds"] for r in done]
        out["latency_s"][engine] = {
            "p50": _round(percentile(seconds, 50)), "p95": _round(percentile(seconds, 95)),
            "max": _round(max(seconds) if seconds else None),
            "last_attempt_p50": _round(percentile(last, 50)),
        }
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_race(spec: RaceSpec) -> dict[str, Any]:
    """Run one race (module docstring) and return its result as a JSON-able dict."""
    work = Path(spec.work_dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spec.work_dir = str(work)
    began = time.monotonic()
    _create_table(spec)
    writers = _start_writers(spec, work)
    try:
        deadline = time.monotonic() + spec.startup_timeout
        while not all(Path(w["files"]["ready"]).exists() for w in writers):
            dead = [w for w in writers if w["proc"].poll() is not None]
            if dead or time.monotonic() > deadline:
                w = dead[0] if dead else writers[0]
                raise RuntimeError(f"writer {w['writer']} ({w['engine']}) not ready "
                                   f"({'exited ' + str(w['proc'].returncode) if dead else 'timeout'}):\n"
                                   + _tail(Path(w["files"]["log"])))
            time.sleep(0.1)
        ready_s = time.monotonic() - began
        start = time.time() + 0.5
        (work / "start.tmp").write_text(json.dumps({"start": start, "end": start + spec.seconds}))
        (work / "start.tmp").replace(work / "start.json")
        finish_by = time.monotonic() + spec.seconds + 180
        for w in writers:
            w["proc"].wait(max(1.0, finish_by - time.monotonic()))
        failed = [w for w in writers if w["proc"].returncode != 0]
        if failed:
            w = failed[0]
            raise RuntimeError(f"writer {w['writer']} ({w['engine']}) exited {w['proc'].returncode}:\n"
                               + _tail(Path(w["files"]["log"])))
    finally:
        for w in writers:
            _stop_group(w["proc"])
    records = _read_records(writers)
    spark_attempts = _spark_commit_attempts(writers)
    race_end = max((r.get("t1", r["t0"]) for r in records if r["phase"] == "race"), default=start)
    result: dict[str, Any] = {
        "mode": spec.mode, "table": spec.table, "seconds": spec.seconds,
        "writers": {"spark": spec.spark_writers, "delta-rs": spec.rs_writers}, "rows_per_batch": spec.rows,
        "pause_s": {"spark": spec.spark_pause, "delta-rs": spec.rs_pause}, "startup_s": round(ready_s, 1), "race_s": round(race_end - start, 1),
        **summarize(spec, records), **verify(spec, records),
        "wall_s": round(time.monotonic() - began, 1),
    }
    result["raced"]["spark_version_races_lost"] = spark_attempts["attempts"] - spark_attempts["committed"]
    result["ok"] = not (result["lost"] or result["doubled"] or result["unexpected"] or result["version_gaps"])
    (work / "result.json").write_text(json.dumps(result, indent=2))
    return result


# --- benchmark section ---------------------------------------------------------------------------


def _machine() -> str:
    cores = os.cpu_count()
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    return f"{cores} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(results: list[dict[str, Any]], command: str, started: datetime, load: tuple[float, float]) -> str:
    """The docs/benchmarks.md section for races of the same writers in each commit mode."""
    first = results[0]
    lines = [
        "## Concurrent commits on MinIO",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {_machine()}; MinIO on 127.0.0.1; each Spark writer its own JVM (local[1], driver memory 1g)",
        f"- command: `{command}`",
        f"- load average (1 min) before / after: {load[0]:.1f} / {load[1]:.1f} (the machine is shared)",
        f"- writers: {first['writers']['spark']} Spark + {first['writers']['delta-rs']} delta-rs processes on one "
        f"table, {first['seconds']:g} s a run after every writer is up, batches of {first['rows_per_batch']} rows "
        "alternating a blind append and an insert-only MERGE within the engine's partition; a lost conflict is "
        "redone by `retry_on_conflict` (5 attempts). delta-rs pause: a delta-rs writer sleeps a uniform 0 to "
        "that many seconds after each batch (Spark writers never pause). Latency: first attempt to the commit, "
        "retries included. Versions found taken: commit attempts (Delta's own retries inside one write) "
        "whose version another writer had committed first, so the writer moved on to a later one (Spark: "
        "OptimisticTransaction's attempts minus its commits; delta-rs: num_retries in its commitInfo); in "
        "brackets, the most versions a Spark commit landed after the version its write read.",
        "",
        "| s3.commit | delta-rs pause s | commits Spark / delta-rs | log versions (gaps) | lost | doubled | "
        "unexpected | conflicts retried Spark / delta-rs | gave up / other errors | versions found taken Spark "
        "(most behind) / delta-rs | Spark p50 / p95 s | delta-rs p50 / p95 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lat, raced = r["latency_s"], r["raced"]
        errors = sum(sum(e.values()) for e in r["errors"].values())
        lines.append(
            f"| {r['mode']} | {r['pause_s']['delta-rs']:g} | {r['commits']['spark']} / {r['commits']['delta-rs']} | "
            f"{r['versions']} ({len(r['version_gaps'])}) | {len(r['lost'])} | {len(r['doubled'])} | "
            f"{len(r['unexpected'])} | {r['conflicts']['spark']} / {r['conflicts']['delta-rs']} | "
            f"{sum(r['gave_up'].values())} / {errors} | "
            f"{raced['spark_version_races_lost']} ({raced['spark_versions_behind_max']}) / "
            f"{raced['delta_rs_version_retries']} | "
            f"{_fmt(lat['spark']['p50'])} / {_fmt(lat['spark']['p95'])} | "
            f"{_fmt(lat['delta-rs']['p50'])} / {_fmt(lat['delta-rs']['p95'])} |")
    notes = []
    for r in results:
        for item in r["lost"]:
            holder = item["reported_version_now_holds"] or {}
            notes.append(f"- {r['mode']}, delta-rs pause {r['pause_s']['delta-rs']:g} s: lost {item['engine']} "
                         f"{item['kind']} `{item['batch']}`, reported committed as version {item['reported_version']}, "
                         f"which holds {holder.get('engine')}'s {holder.get('operation')} `{holder.get('batch')}`.")
        for engine, errors in r["errors"].items():
            notes += [f"- {r['mode']}: {engine} error (x{n}): {text}" for text, n in errors.items()]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def run(argv: list[str]) -> str:
    """`make bench`: a race per commit mode (and delta-rs pause); returns the Markdown section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commit_race bench")
    _race_options(parser, bench=True)
    parser.add_argument("--markdown", type=Path, help="also write the section into this file")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    minio = None
    endpoint = args.endpoint
    if not endpoint:
        from clickrec.services import start_minio

        shutil.rmtree(WORK / "minio", ignore_errors=True)
        minio = start_minio(WORK / "minio")
        endpoint = minio.url
        os.environ.update(minio.env)
    results = []
    try:
        for pause in args.rs_pause:
            for mode in args.modes:
                result = run_race(_spec(args, endpoint, mode, rs_pause=pause))
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        if minio is not None:
            minio.stop()
    command = ".venv/bin/python -m benchmarks.commit_race bench " + " ".join(argv)
    section = markdown(results, command.strip(), started, (load_before, os.getloadavg()[0]))
    if args.markdown:
        from benchmarks.run import write_section

        write_section(args.markdown, "commit_race", section)
    return section


def _race_options(parser: argparse.ArgumentParser, bench: bool = False) -> None:
    parser.add_argument("--endpoint", default=os.environ.get("CLICKREC_S3_ENDPOINT"),
                        help="S3 endpoint URL (default $CLICKREC_S3_ENDPOINT; bench without one: a MinIO of its own)")
    parser.add_argument("--table", help="s3a://<bucket>/<prefix> of a new table "
                        "(default: a fresh prefix of clickrec.services.LAKE_BUCKET)")
    modes = ["single_writer", "conditional_put"]
    if bench:
        parser.add_argument("--modes", nargs="+", default=modes, choices=modes, help="s3.commit of each run")
    else:
        parser.add_argument("--mode", default="conditional_put", choices=modes, help="s3.commit for every writer")
    parser.add_argument("--seconds", type=float, default=60.0, help="race duration (after all writers are ready)")
    parser.add_argument("--spark-writers", type=int, default=2)
    parser.add_argument("--rs-writers", type=int, default=1)
    parser.add_argument("--rows", type=int, default=3, help="rows per batch")
    parser.add_argument("--attempts", type=int, default=5, help="attempts per batch (retry_on_conflict)")
    parser.add_argument("--warmup", type=int, default=2, help="batches per writer before the race (2: an append and a MERGE)")
    parser.add_argument("--spark-pause", type=float, default=0.0,
                        help="a Spark writer sleeps up to this many seconds (uniform) after each batch")
    parser.add_argument("--rs-pause", type=float, default=[0.5] if bench else 0.5, nargs="+" if bench else None,
                        help="a delta-rs writer sleeps up to this many seconds (uniform) after each batch"
                        + (" (bench: a run per value and mode)" if bench else ""))
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="writer logs and results (default .bench/commit_race/<mode>)")


def _spec(args: argparse.Namespace, endpoint: str | None, mode: str, rs_pause: float | None = None) -> RaceSpec:
    from clickrec.services import LAKE_BUCKET

    if not endpoint:
        raise SystemExit("no S3 endpoint: pass --endpoint or set CLICKREC_S3_ENDPOINT")
    rs_pause = args.rs_pause if rs_pause is None else rs_pause
    name = f"{mode}-{rs_pause:g}"
    table = f"{args.table.rstrip('/')}/{name}" if args.table else f"s3a://{LAKE_BUCKET}/commit-race/{name}-{uuid.uuid4().hex[:8]}"
    work = (args.work_dir or WORK) / name
    return RaceSpec(endpoint=endpoint, table=table, mode=mode, seconds=args.seconds,
                    spark_writers=args.spark_writers, rs_writers=args.rs_writers, rows=args.rows,
                    attempts=args.attempts, warmup=args.warmup, spark_pause=args.spark_pause,
                    rs_pause=rs_pause, work_dir=str(work))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commit_race", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    race = sub.add_parser("race", help="one race in one commit mode; prints the result as JSON")
    _race_options(race)
    race.add_argument("--json", type=Path, help="also write the result here")
    sub.add_parser("bench", help="a race per commit mode; prints the docs/benchmarks.md section",
                   add_help=False)
    writer = sub.add_parser("writer", help="(internal) one writer process")
    writer.add_argument("job", type=Path)
    args, rest = parser.parse_known_args(argv)
    code = 0
    if args.command == "bench":
        print(run(rest))
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    elif args.command == "writer":
        _writer_main(args.job)
    else:
        result = run_race(_spec(args, args.endpoint, args.mode))
        text = json.dumps(result, indent=2)
        if args.json:
            args.json.write_text(text)
        print(text)
        code = 0 if result["ok"] else 1
    # delta-rs' native runtime can abort the interpreter at teardown ("terminate called without
    # an active exception", as tests/conftest.py notes): leave with our own exit code first.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
