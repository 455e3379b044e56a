"""conf/stack.yaml as a user runs it after `clickrec services up`: the whole pipeline on MinIO,
the MLflow server and Kafka, with `clickrec stream` running beside it, then the serving reader
on the published table, without Spark.

The stream is a `clickrec stream` process of its own (a second JVM, committing with delta-rs),
started with the pipeline. `replay` sends it events at 1,000 events/s as the pipeline starts
training and again as it starts publishing, so its micro-batches commit while the pipeline
trains and publishes, between the pipeline's own commits, and its lists wait for publish's
lease on gold. (Until ingest has created the tables a micro-batch would take the Spark
bootstrap path, a second Spark ingest racing the pipeline's: too slow for this suite.) The first
part repeats every fifth event of the pipeline's input, so both writers offer those to bronze.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import clickrec.ingest
import clickrec.publish
import clickrec.train
from clickrec import columns as C
from clickrec.config import ClickrecConfig, load_config
from clickrec.generate import generate_clickstream
from clickrec.io.files import list_input_files
from clickrec.io.lake import Lake
from clickrec.pipeline import run_pipeline
from clickrec.quality import load_suite
from clickrec.replay import replay
from clickrec.services import LAKE_BUCKET, ServiceProcess, env_lines
from clickrec.serving.reader import RecommendationReader
from clickrec.spark import apply_s3a
from clickrec.staging import stage_events, suite_params
from tests.support.services import objects

REPO = Path(__file__).resolve().parents[2]
EVENTS = 1500  # the pipeline's input
STREAMED = 1500  # events only the stream gets
OVERLAP_EVERY = 5  # every 5th line of the pipeline's input is replayed to the stream too
REPLAY_RATE = 1000  # events/s
START_TIMEOUT_S = 240.0  # a JVM start on a loaded 2-core machine
DRAIN_TIMEOUT_S = 300.0
BATCH_LINE = re.compile(r"clickrec\.microbatch: batch (\d+): (\{.*\})$", re.MULTILINE)


def test_the_stack_config_runs_the_pipeline_beside_the_stream_and_serves_from_minio(
    spark: SparkSession, kafka_service: ServiceProcess, minio_env: ServiceProcess, mlflow_service: ServiceProcess,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What `source .clickrec/services/services.env` puts in a user's shell.
    services = {"kafka": kafka_service, "minio": minio_env, "mlflow": mlflow_service}
    for line in env_lines(services).splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        monkeypatch.setenv(key, value)
    run = uuid.uuid4().hex[:8]
    overrides = [
        f"lake.root=s3a://{LAKE_BUCKET}/stack-{run}/lake",
        f"mlflow.experiment=stack-{run}", f"mlflow.model_name=stack-{run}", f"kafka.models_topic=models-{run}",
        f"kafka.clickstream_topic=clickstream-{run}", f"stream.replay_rate={REPLAY_RATE}",
        # the path through the stack, not the model's quality: one small grid point, two folds
        "train.grid.rank=[4]", "train.grid.reg_param=[0.1]", "train.grid.alpha=[10.0]", "train.grid.max_iter=[3]",
        "train.num_folds=2", "train.num_blocks=2",
        # such a model need not beat popularity, which `auto` requires of a first champion
        "train.promote=always",
    ]
    config = load_config(REPO / "conf" / "stack.yaml", overrides)
    apply_s3a(spark, config.s3)  # the test run's one session, pointed at this MinIO
    source = tmp_path / "events.csv"
    generate_clickstream(source, events=EVENTS, seed=21)
    parts = stream_parts(source, tmp_path / "stream")

    log, out = tmp_path / "stream.log", tmp_path / "stream.out"
    stream = start_stream(overrides, log, out)
    try:
        with ThreadPoolExecutor(max_workers=1) as sender:  # one replay after another, in order
            steps = StepFeed(config, sender, monkeypatch, stream, log)
            steps.feed_at("train", clickrec.train, "run_train", parts[0])
            steps.feed_at("publish", clickrec.publish, "publish", parts[1])
            steps.marks["start"] = time.time()
            summary = run_pipeline(spark, config, input_path=str(source))
            steps.marks["end"] = time.time()
            sent = steps.sent()
        batches = wait_until_consumed(stream, log, sent)
        stream.send_signal(signal.SIGTERM)  # as a supervisor stops it: it exits while the lake is checked

        ingest = summary["ingest"]
        assert ingest["rows_read"] == EVENTS == ingest["accepted"] + ingest["duplicates"] + ingest["quarantined"]
        # GX 1.x has no S3 store: the data docs are rendered locally and copied under the lake.
        lake = config.lake.root.removeprefix(f"s3a://{LAKE_BUCKET}/")
        assert ingest["data_docs"] == f"{config.lake.root}/_quality/data_docs/index.html"
        docs = objects(minio_env, f"{lake}/_quality/data_docs/")
        assert f"{lake}/_quality/data_docs/index.html" in docs
        assert any("/validations/" in name and name.endswith(".html") for name in docs), docs
        # the ingest's scratch is gone (s3a may leave an empty folder marker behind)
        assert [n for n in objects(minio_env, f"{lake}/_staging/") if not n.endswith("/")] == []
        assert summary["train"]["model_name"] == f"stack-{run}" and summary["train"]["promoted"] is True
        champion = summary["publish"]["champion"]
        assert champion["users"] > 0 and champion["announcement"]["sent"] is True

        # The stream read every line of both parts.
        assert sent == sum(len(p.read_text().splitlines()) - 1 for p in parts)
        streamed = {k: sum(b[k] for b in batches.values()) for k in ("rows_read", "accepted", "duplicates", "quarantined")}
        assert streamed["rows_read"] == sent
        # Commits of bronze, silver and gold in time order: the pipeline's by Spark, the stream's
        # by delta-rs. The stream committed to bronze and silver after the pipeline's ingest had
        # and before its publish started, and again after (the part sent as publish started).
        timeline = commits(config)
        shown = show(timeline, steps.marks) + f"\npipeline held up (s): {steps.waited}"
        print(shown, *batches.values(), sep="\n")  # in the report when a later check fails
        ingested = max(t for t, table, engine, _ in timeline if engine == "spark" and table != C.GOLD_RECOMMENDATIONS)
        # Spark commits to gold: publish's, and the stream's first gold write when it has a model
        # (the champion train registered) before publish has created gold (the stream's Spark path).
        gold_by_spark = [t for t, table, engine, _ in timeline if engine == "spark" and table == C.GOLD_RECOMMENDATIONS]
        assert ingested < steps.marks["train"] < steps.marks["publish"], shown
        assert any(steps.marks["publish"] < t < steps.marks["end"] for t in gold_by_spark), shown
        stream_commits = [(t, table) for t, table, engine, _ in timeline if engine == "delta-rs"]
        assert {table for t, table in stream_commits if ingested < t < steps.marks["publish"]} == {
            C.BRONZE_EVENTS, C.SILVER_INTERACTIONS}, shown
        assert {table for t, table in stream_commits if t > steps.marks["publish"]} == {
            C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.GOLD_RECOMMENDATIONS}, shown
        assert {engine for _, _, engine, _ in timeline} == {"spark", "delta-rs"}, shown

        # Bronze holds every valid event of both inputs once: whichever writer offered one second skipped it.
        expected = valid_event_ids(spark, config, [source, *parts])
        held = read(config, C.BRONZE_EVENTS, C.EVENT_ID)
        assert len(held) == len({r[C.EVENT_ID] for r in held}) == len(expected), "an event is in bronze twice"
        assert {r[C.EVENT_ID] for r in held} == expected
        assert ingest["accepted"] + streamed["accepted"] == len(expected)
        offered = EVENTS - ingest["quarantined"] + streamed["rows_read"] - streamed["quarantined"]
        assert ingest["duplicates"] + streamed["duplicates"] == offered - len(expected) > 0
        # Silver is what a recompute from bronze gives, its ids the indexes' entries.
        assert_silver_is_a_recompute_of_bronze(spark, config)
        # Gold: one list per user and variant, one model version per variant, also in the stream's lists.
        gold = read(config, C.GOLD_RECOMMENDATIONS, C.USER_ID, C.VARIANT, C.MODEL_VERSION, C.SOURCE)
        assert len(gold) == len({(r[C.USER_ID], r[C.VARIANT]) for r in gold})
        versions = {v: {r[C.MODEL_VERSION] for r in gold if r[C.VARIANT] == v} for v in {r[C.VARIANT] for r in gold}}
        assert versions["champion"] == {champion["model_version"]}, versions
        assert all(len(held) == 1 for held in versions.values()), versions
        assert any(r[C.SOURCE] == C.SOURCE_STREAM and r[C.VARIANT] == "champion" for r in gold)

        user = next(r[C.USER_ID] for r in gold if r[C.VARIANT] == "champion" and r[C.SOURCE] == C.SOURCE_BATCH)
        answer = RecommendationReader(config).recommendations(user, n=3)  # delta-rs straight from MinIO
        assert answer["source"] == C.SOURCE_BATCH and len(answer["items"]) == 3
        assert answer["model_version"] == champion["model_version"]

        stream_summary = stopped(stream, log, out)
        assert stream_summary["ok"] is True and stream_summary["stop_reason"] == "sigterm"
        assert stream_summary["batches"] == len(batches)
        assert {k: stream_summary[k] for k in streamed} == streamed
        assert stream_summary["model_version"] == champion["model_version"]
    finally:
        if stream.poll() is None:
            os.killpg(stream.pid, signal.SIGKILL)
            stream.wait(timeout=60)


# --- the stream beside the pipeline ---------------------------------------------------------------


def stream_parts(source: Path, folder: Path) -> list[Path]:
    """Two CSV files for the stream: every OVERLAP_EVERY-th line of `source` and new events."""
    folder.mkdir()
    fresh = folder / "fresh.csv"
    generate_clickstream(fresh, events=STREAMED, seed=22)  # user ids overlap the pipeline's
    header, *repeated = source.read_text().splitlines(keepends=True)
    new = fresh.read_text().splitlines(keepends=True)[1:]
    fresh.unlink()
    half = len(new) // 2
    chunks = [repeated[::OVERLAP_EVERY] + new[:half], new[half:]]
    paths = [folder / f"part-{n}.csv" for n in range(len(chunks))]
    for path, rows in zip(paths, chunks, strict=True):
        path.write_text(header + "".join(rows))
    return paths


def start_stream(overrides: list[str], log: Path, out: Path) -> subprocess.Popen[bytes]:
    """`clickrec stream -c conf/stack.yaml` in a process (and JVM) of its own, as a user runs it."""
    sets = [a for o in [*overrides, "spark.master=local[2]", "spark.driver_memory=1g", "spark.ui_enabled=false"]
            for a in ("--set", o)]
    return subprocess.Popen(
        [sys.executable, "-m", "clickrec.cli", "stream", "-c", "conf/stack.yaml", *sets, "--max-seconds", "900"],
        cwd=REPO, stdout=out.open("wb"), stderr=log.open("wb"), start_new_session=True,
    )


class StepFeed:
    """Replays a part of the stream's events (in the background) when the pipeline starts a step.

    Before the first part it waits until the stream's query has started; before each next
    one, until the stream has read the parts sent so far. Both have usually happened already
    (the stream starts during ingest, and takes a part within seconds while the pipeline
    trains), so the pipeline is rarely held up (`waited`); when it is, the stream's commits of
    a part still come between the pipeline's commits of the steps around it. `marks`: when
    each step started (after any wait), in seconds since the epoch.
    """

    def __init__(self, config: ClickrecConfig, sender: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch,
                 stream: subprocess.Popen[bytes], log: Path) -> None:
        self.config, self.sender, self.monkeypatch, self.stream, self.log = config, sender, monkeypatch, stream, log
        self.marks: dict[str, float] = {}
        self.waited: dict[str, float] = {}
        self.sends: list[Future[dict[str, Any]]] = []

    def feed_at(self, step: str, module: Any, name: str, part: Path) -> None:
        real: Callable[..., Any] = getattr(module, name)

        def started(*args: Any, **kwargs: Any) -> Any:
            if step not in self.marks:  # publish runs once per alias
                held = time.monotonic()
                if self.sends:
                    wait_until_consumed(self.stream, self.log, self.sent())
                else:
                    wait_until_started(self.stream, self.log)
                self.waited[step] = round(time.monotonic() - held, 1)
                self.marks[step] = time.time()
                self.sends.append(self.sender.submit(replay, self.config, input_path=str(part)))
            return real(*args, **kwargs)

        self.monkeypatch.setattr(module, name, started)

    def sent(self) -> int:
        """How many events the parts replayed so far sent (waits for the replays to finish)."""
        results = [s.result(timeout=120) for s in self.sends]
        assert all(r["rate"] == REPLAY_RATE for r in results), results
        return sum(int(r["sent"]) for r in results)


def wait_until_started(stream: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the stream process logged that its query started."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and stream.poll() is None:
        if " from topic " in (log.read_text(errors="replace") if log.is_file() else ""):
            return
        time.sleep(0.5)
    raise AssertionError(f"the stream's query did not start (exit {stream.poll()}): "
                         f"{log.read_text(errors='replace')[-4000:]}")


def logged_batches(log: Path) -> dict[int, dict[str, Any]]:
    """The stream's `batch N: {...}` log lines, by batch id."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return {int(m.group(1)): ast.literal_eval(m.group(2)) for m in BATCH_LINE.finditer(text)}


def wait_until_consumed(stream: subprocess.Popen[bytes], log: Path, sent: int) -> dict[int, dict[str, Any]]:
    """Wait until the stream's micro-batches have read `sent` records; their log lines."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while time.monotonic() < deadline and stream.poll() is None:
        batches = logged_batches(log)
        if sum(b["rows_read"] for b in batches.values()) >= sent:
            return batches
        time.sleep(0.5)
    raise AssertionError(f"the stream did not read {sent} events (exit {stream.poll()}): "
                         f"{log.read_text(errors='replace')[-4000:]}")


def stopped(stream: subprocess.Popen[bytes], log: Path, out: Path) -> dict[str, Any]:
    """Wait for the SIGTERMed stream to exit 0 (its running batch finished); its JSON summary line."""
    stream.wait(timeout=180)
    assert stream.returncode == 0, log.read_text(errors="replace")[-4000:]
    return json.loads(out.read_text().strip().splitlines()[-1])


def read(config: ClickrecConfig, table: str, *columns: str) -> list[dict[str, Any]]:
    """Rows of a table (these columns), read with delta-rs straight from MinIO."""
    dt = Lake.from_config(config).open(table)
    assert dt is not None, table
    return dt.to_pyarrow_table(columns=list(columns)).to_pylist()


def assert_silver_is_a_recompute_of_bronze(spark: SparkSession, config: ClickrecConfig) -> None:
    """silver/interactions equals a recompute over all of bronze (without the ids, which are
    given in arrival order), and each row's ids are its user's and item's in the indexes."""
    silver = [r.asDict() for r in Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS).collect()]
    recomputed = [r.asDict() for r in clickrec.ingest.recompute_interactions(spark, config).collect()]

    def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r[C.USER_ID], r[C.ITEM_ID]): {c: v for c, v in r.items() if c not in (C.USER_IDX, C.ITEM_IDX)}
                for r in rows}

    mine, theirs = by_key(silver), by_key(recomputed)
    assert len(mine) == len(silver), "a (user, item) is in silver twice"
    differ = [(k, mine.get(k), theirs.get(k)) for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]
    assert not differ, f"{len(differ)} of {len(theirs)} rows differ, e.g. {differ[:3]}"
    for index, id_col, idx_col in ((C.SILVER_USER_INDEX, C.USER_ID, C.USER_IDX), (C.SILVER_ITEM_INDEX, C.ITEM_ID, C.ITEM_IDX)):
        ids = {r[C.SOURCE_ID]: r[C.IDX] for r in read(config, index, C.SOURCE_ID, C.IDX)}
        assert len(set(ids.values())) == len(ids), f"{index}: an id is given twice"
        assert all(row[idx_col] == ids[row[id_col]] for row in silver), f"{index}: a silver row has another id"


def commits(config: ClickrecConfig) -> list[tuple[float, str, str, str]]:
    """(seconds since the epoch, table, engine, operation) of every commit to bronze, silver and gold."""
    lake, found = Lake.from_config(config), []
    for table in (C.BRONZE_EVENTS, C.SILVER_INTERACTIONS, C.GOLD_RECOMMENDATIONS):
        dt = lake.open(table)
        assert dt is not None, table
        for entry in dt.history():
            engine = "spark" if str(entry.get("engineInfo", "")).startswith("Apache-Spark") else (
                "delta-rs" if str(entry.get("clientVersion", "")).startswith("delta-rs") else "other")
            found.append((entry["timestamp"] / 1000, table, engine, str(entry.get("operation"))))
    return sorted(found)


def show(timeline: list[tuple[float, str, str, str]], marks: dict[str, float]) -> str:
    """The commits and the pipeline's steps, in time order, for an assertion's message."""
    rows = [(t, f"{table} {engine} {op}") for t, table, engine, op in timeline]
    rows += [(t, f"--- pipeline {step}") for step, t in marks.items()]
    start = min(t for t, _ in rows)
    return "\n" + "\n".join(f"{t - start:8.2f} {what}" for t, what in sorted(rows))


def valid_event_ids(spark: SparkSession, config: ClickrecConfig, files: list[Path]) -> set[str]:
    """The event_ids of the valid rows of `files`, staged as ingest stages them."""
    suite = load_suite(config.ingest.events_suite, suite_params(config))
    inputs = [f for path in files for f in list_input_files(spark, f"file://{path}")]
    staged = stage_events(spark, config, inputs, suite)
    return {r[C.EVENT_ID] for r in staged.where(F.size(C.REASONS) == 0).select(C.EVENT_ID).distinct().collect()}
