"""Stream freshness: time from an event's send to Kafka until the user's row in gold reflects it.

    .venv/bin/python -m benchmarks.stream_bench --rates 100 1000 [--seconds 30]

One run, under .bench/stream/ (rebuilt every run):

1. a KRaft broker (clickrec.services.start_kafka) on a free loopback port;
2. a lake: `generate` 10,000 events, `ingest`, and a rank-16 implicit ALS registered as
   champion with its reg_param/alpha logged (what fold-in reads);
3. per rate R: a fresh topic and `clickrec.stream.run_stream` (processing-time trigger
   `--trigger` s) in a thread; `replay`-style load at R events/s for `--seconds`, and every
   0.5 s a probe: a brand-new user viewing an item the model knows. The load is another
   generated file (new events, so every micro-batch does the full bronze/silver/gold work). Freshness of a probe = the
   first time a delta-rs read of gold/recommendations (polled every 100 ms) holds that user's
   row, minus the time the probe was handed to the producer. The lag is the listener's
   offsets-behind-latest per micro-batch: "sustained" means it did not grow over the run;
4. side by side: `clickrec pipeline` (ingest + train with one grid point + publish) over the
   same base events, the other way to make one new user's clicks visible.

Returns the Markdown section for docs/benchmarks.md and prints one JSON line per rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORK = Path(".bench/stream")
BASE_EVENTS = 10_000


def _machine() -> str:
    cores = os.cpu_count()
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    return f"{cores} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _config(root: Path, bootstrap: str, *, topic: str = "clickstream", query: str = "bench", trigger: float = 0.5,
            s3_endpoint: str | None = None) -> Any:
    """The benchmark's config; with `s3_endpoint` (--stack) the lake and checkpoints are on MinIO."""
    from clickrec.config import load_config
    from clickrec.services import LAKE_BUCKET

    storage = [f"lake.root={root / 'lake'}", f"spark.checkpoint_dir={root / 'checkpoints'}"]
    if s3_endpoint is not None:
        prefix = f"s3a://{LAKE_BUCKET}/{root.name}"
        storage = [f"lake.root={prefix}/lake", f"spark.checkpoint_dir={prefix}/checkpoints", f"s3.endpoint={s3_endpoint}"]
    return load_config("conf/local.yaml", [
        *storage, f"mlflow.tracking_uri=sqlite:///{(root / 'mlflow.db').resolve()}",
        f"mlflow.artifact_location={root / 'mlartifacts'}",
        "spark.log_level=ERROR", "spark.conf.spark.ui.showConsoleProgress=false", "ingest.data_docs=false",
        f"kafka.bootstrap_servers={bootstrap}", f"kafka.clickstream_topic={topic}",
        f"stream.query_name={query}", f"stream.trigger_seconds={trigger}", "stream.max_offsets_per_trigger=50000",
        "train.grid.rank=[16]", "train.grid.reg_param=[0.1]", "train.grid.alpha=[1.0]", "train.grid.max_iter=[5]",
        "train.num_folds=2", "publish.pipeline_aliases=[champion]",
    ])


class _BatchLog(logging.Handler):
    """Collects the stream's per-batch record (rows and seconds per step) from its log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "batch %d: %s" and isinstance(record.args, tuple) and record.args[1].get("rows_read"):
            self.records.append(record.args[1])


def _pct(samples: list[float], q: int) -> float:
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def _load(path: Path, config: Any, *, rate: float, seconds: float, probe_items: list[str],
          sent_at: dict[str, float], tag: str) -> Iterator[tuple[str | None, bytes]]:
    """Events of `path` (cycled) for `seconds` at `rate`, a probe every 0.5 s; records probe times."""
    from clickrec.replay import event_payloads

    total = int(rate * seconds)
    every = max(1, int(rate * 0.5))
    base = list(event_payloads(path, config))
    for n in range(total):
        if n % every == 0:
            k = len(sent_at)
            user = f"probe-{tag}-{k}"
            body = {"event_time": "2019-12-31 12:00:00 UTC", "event_type": "view",
                    "product_id": probe_items[k % len(probe_items)], "category_id": "", "category_code": "",
                    "brand": "", "price": "1.0", "user_id": user, "user_session": f"s-{user}"}
            sent_at[user] = time.time()
            yield user, json.dumps(body).encode()
        else:
            yield base[n % len(base)]


def measure_rate(spark: Any, root: Path, bootstrap: str, load_file: Path, probe_items: list[str], *,
                 rate: float, seconds: float, trigger: float, s3_endpoint: str | None = None) -> dict[str, Any]:
    from clickrec import columns as C
    from clickrec.io.kafka import send_events
    from clickrec.io.lake import Lake
    from clickrec.stream import metrics_path, run_stream

    tag = f"r{int(rate)}"
    config = _config(root, bootstrap, topic=f"clickstream-{tag}", query=f"bench-{tag}", trigger=trigger,
                     s3_endpoint=s3_endpoint)
    result: dict[str, Any] = {}
    batches = _BatchLog()
    logging.getLogger("clickrec.microbatch").addHandler(batches)
    logging.getLogger("clickrec.microbatch").setLevel(logging.INFO)
    runner = threading.Thread(target=lambda: result.update(
        run_stream(spark, config, max_seconds=seconds + 120)), daemon=True)
    runner.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not any(q.name == config.stream.query_name for q in spark.streams.active):
        time.sleep(0.2)
    time.sleep(3 * trigger + 2)
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    sent: dict[str, Any] = {}
    sender = threading.Thread(target=lambda: sent.update(send_events(
        config.kafka, config.kafka.clickstream_topic,
        _load(load_file, config, rate=rate, seconds=seconds, probe_items=probe_items, sent_at=sent_at, tag=tag),
        rate=rate)), daemon=True)
    sender.start()
    lake = Lake.from_config(config)
    stop_at = time.monotonic() + seconds + 90
    while time.monotonic() < stop_at:
        gold = lake.open(C.GOLD_RECOMMENDATIONS)  # None until the stream has written gold
        users = set(gold.to_pyarrow_table(columns=[C.USER_ID])[C.USER_ID].to_pylist()) if gold is not None else set()
        now = time.time()
        for user, t in list(sent_at.items()):
            if user not in seen_at and user in users:
                seen_at[user] = now - t
        if not sender.is_alive() and len(seen_at) == len(sent_at):
            break
        time.sleep(0.1)
    for q in spark.streams.active:
        if q.name == config.stream.query_name:
            q.stop()
    runner.join(timeout=300)
    logging.getLogger("clickrec.microbatch").removeHandler(batches)
    metrics_file = Path(metrics_path(config))
    history = json.loads(metrics_file.read_text())["history"] if metrics_file.is_file() else []
    busy = [h for h in history if h["num_input_rows"]]  # (no metrics file on an S3 lake: batches from the log)
    lags = [h["offsets_behind_latest"] or 0 for h in busy]
    half = len(lags) // 2
    fresh = sorted(seen_at.values())
    # in send order: a stream that keeps up has the same freshness at the end as at the start
    in_order = [seen_at[u] for u in sorted(seen_at, key=lambda u: sent_at[u])]
    third = max(1, len(in_order) // 3)
    early, late = (statistics.median(in_order[:third]), statistics.median(in_order[-third:])) if in_order else (0, 0)
    steps = {k: round(statistics.fmean(b.get(k, 0.0) for b in batches.records), 2) if batches.records else None
             for k in ("rows_read", "stage_s", "bronze_s", "silver_s", "gold_s", "seconds")}
    out = {
        "rate": rate, "stream_ok": bool(result.get("ok", True)) and "query" in result, "seconds": seconds, "probes": len(sent_at), "probes_seen": len(fresh),
        "p50_s": round(_pct(fresh, 50), 2) if fresh else None,
        "p95_s": round(_pct(fresh, 95), 2) if fresh else None,
        "max_s": round(fresh[-1], 2) if fresh else None,
        "batches": len(busy) or len(batches.records),
        "mean_batch_s": round(statistics.fmean(h["batch_duration_ms"] for h in busy) / 1000, 2) if busy else None,
        "processed_rows_per_s": round(statistics.fmean(h["processed_rows_per_second"] or 0 for h in busy), 1) if busy else None,
        "lag_first_half": max(lags[:half], default=0), "lag_second_half": max(lags[half:], default=0),
    }
    achieved = sent.get("sent", 0) / sent["seconds"] if sent.get("seconds") else 0.0
    out.update(fresh_early_p50_s=round(early, 2), fresh_late_p50_s=round(late, 2), batch_steps=steps,
               sent_rate=round(achieved))
    # sustained: every probe arrived and freshness did not grow from the first third of the
    # run to the last (the offsets-behind metric is 0 whenever a batch takes all there is)
    # the producer must also have reached the rate (one Python thread on a shared core may not)
    out["sustained"] = (bool(fresh) and len(fresh) == len(sent_at) and late <= 1.5 * early + 1.0
                        and achieved >= 0.95 * rate)
    print(json.dumps(out), flush=True)
    return out


def run(argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[100, 1000, 2000, 4000])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--trigger", type=float, default=0.5)
    parser.add_argument("--base-events", type=int, default=BASE_EVENTS,
                        help="events ingested before the stream starts (the lake the stream updates)")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="do not time the whole pipeline over the base events afterwards")
    parser.add_argument("--stack", action="store_true",
                        help="lake and checkpoints on a MinIO started for the run (conf/stack.yaml's storage)")
    args = parser.parse_args(argv)
    from pyspark.sql import functions as F

    from clickrec import columns as C
    from clickrec.generate import generate_clickstream
    from clickrec.ingest import ingest
    from clickrec.io.lake import Lake
    from clickrec.pipeline import run_pipeline
    from clickrec.services import start_kafka, start_minio
    from clickrec.spark import build_spark_session
    from clickrec.train import run_train

    started = datetime.now(UTC)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    kafka = start_kafka(WORK / "kafka")
    minio = start_minio(WORK / "minio") if args.stack else None
    s3_endpoint = minio.url if minio is not None else None
    if minio is not None:
        os.environ.update(minio.env)  # the credentials, from the environment as in stack mode
    try:
        root = WORK / "lake"
        config = _config(root, kafka.url, s3_endpoint=s3_endpoint)
        spark = build_spark_session(config)
        base, load_file = WORK / "base.csv", WORK / "load.csv"
        generate_clickstream(base, events=args.base_events, seed=3)
        # the replayed load: other events of the same kind of shop, new to bronze (a replay of
        # the base would be all duplicates and skip the silver and gold work)
        generate_clickstream(load_file, events=int(max(args.rates) * args.seconds) + 1000, seed=4)
        ingest(spark, config, input_path=str(base))
        run_train(spark, config, promote="always")
        items = Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS) \
            .groupBy(C.ITEM_ID).count().orderBy(F.col("count").desc()).limit(200).collect()
        probe_items = [r[C.ITEM_ID] for r in items]
        rows = [measure_rate(spark, root, kafka.url, load_file, probe_items, rate=r, seconds=args.seconds,
                             trigger=args.trigger, s3_endpoint=s3_endpoint) for r in args.rates]
        # the other way: rerun the whole pipeline so that a new user's clicks show in gold
        pipeline_s = None
        if not args.skip_pipeline:
            pipe_config = _config(WORK / "pipeline", kafka.url, s3_endpoint=s3_endpoint)
            t0 = time.monotonic()
            run_pipeline(spark, pipe_config, input_path=str(base))
            pipeline_s = time.monotonic() - t0
        spark.stop()
    finally:
        kafka.stop()
        if minio is not None:
            minio.stop()
    load = os.getloadavg()
    lines = [
        "## Stream freshness" + (" on MinIO (stack mode)" if args.stack else ""),
        "",
        f"Machine: {_machine()}; load average at the end {load[0]:.1f}. Date: {started:%Y-%m-%d %H:%M} UTC.",
        f"Command: `.venv/bin/python -m benchmarks.stream_bench --rates {' '.join(str(int(r)) for r in args.rates)} "
        f"--seconds {args.seconds:g} --trigger {args.trigger:g}"
        + (f" --base-events {args.base_events}" if args.base_events != BASE_EVENTS else "")
        + (" --skip-pipeline" if args.skip_pipeline else "") + (" --stack" if args.stack else "")
        + f"` (local[*] Spark, one KRaft broker, lake of {args.base_events:,} generated events"
        + (" on MinIO (s3a, conditional-put commits)" if args.stack else "") + ", rank-16 champion).",
        "",
        "Freshness = send of a probe event (a new user viewing a known item) -> the user's row is in "
        "gold/recommendations (delta-rs read, polled every 100 ms). Lag = the Kafka source's "
        "maxOffsetsBehindLatest per micro-batch (listener); it is 0 whenever a batch takes all there is, so "
        "'sustained' is judged by freshness instead: every probe arrived and the p50 of the last third of "
        "the probes is at most 1.5x (+1 s) the first third's, and the producer really sent >= 95% of the target rate. Batch seconds per step come from the stream's "
        "own per-batch log record (stage = the Spark job that reads, parses and flags the batch).",
        "",
        "| events/s (target / sent) | probes seen | p50 s | p95 s | max s | p50 first / last third s | micro-batches | mean events per batch | mean batch s (stage / bronze / silver / gold) | rows/s processed | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        st = r["batch_steps"]
        split = (f"{st['seconds']} ({st['stage_s']} / {st['bronze_s']} / {st['silver_s']} / {st['gold_s']})"
                 if st["seconds"] is not None else "-")
        lines.append(f"| {r['rate']:g} / {r['sent_rate']:g} | {r['probes_seen']}/{r['probes']} | {r['p50_s']} | {r['p95_s']} | {r['max_s']} | "
                     f"{r['fresh_early_p50_s']} / {r['fresh_late_p50_s']} | {r['batches']} | {st['rows_read']} | {split} | "
                     f"{r['processed_rows_per_s']} | {'yes' if r['sustained'] else 'no'} |")
    if pipeline_s is not None:
        lines += ["", f"Side by side: `clickrec pipeline` (ingest + train, one grid point, 2 folds + publish) over "
                  f"the same {args.base_events:,} events took {pipeline_s:.0f} s before a new user's clicks could "
                  "show in gold."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(__import__("sys").argv[1:]))
