"""`clickrec serve` at scale: memory, reload after one stream commit, HTTP tail under a writer.

    .venv/bin/python -m benchmarks.serving_bench --users 1000000 [--n 10] [--requests-per-client 2000]

In one run, on a lake under .bench/serving/ (gold rebuilt each run):

1. gold/recommendations with --users users x 2 variants x n items, written with delta-rs in ten
   appends per variant (ten data files each), partitioned by variant, change data feed on
   (`--no-change-feed` for a table without it); gold/popular_items with one row per variant;
2. reload after one small commit: a RecommendationReader (the service's reader) loads the table,
   then the stream's write (clickrec.io.delta_rs.merge_upsert of 100 users in one variant) is
   committed and `refresh()` timed, five times; the full load is timed too;
3. `clickrec serve` in its own process: RSS (VmRSS, and the peak VmHWM) after start and after
   the load runs;
4. HTTP: 16 client threads (http.client, one keep-alive connection each, in this process; 90 %
   known users, 10 % unknown) against `clickrec serve` idle, then while a writer process
   commits the stream's write continuously (serve.min_reload_seconds=1, poll 0.5 s), then
   against a bare uvicorn app (same uvicorn, httptools + uvloop) that returns one recorded
   response body of the service for every request.

Prints one JSON object per measurement and returns the Markdown section for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.http_load import closed_loop, free_port, wait_healthy
from benchmarks.publish_bench import _machine

WORK = Path(".bench/serving")
CLIENTS = 16
VARIANTS = ("champion", "challenger")
ITEMS = 50_000
STREAM_USERS = 100
BODY_ENV = "CLICKREC_BENCH_BODY"


def _lake_args(root: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [a for k in (f"lake.root={root / 'lake'}", *extra) for a in ("--set", k)]


def _config(root: Path, *extra: str) -> Any:
    from clickrec.config import load_config

    return load_config("conf/local.yaml", [f"lake.root={root / 'lake'}", *extra])


def gold_rows(first: int, count: int, variant: str, n: int, seed: int) -> Any:
    """`count` users' lists (user ids first..first+count-1) of `variant`, n items each."""
    import numpy as np
    import pyarrow as pa

    from clickrec import columns as C

    rng = np.random.default_rng(seed)
    item_ids = pa.array([f"sku-{i}" for i in range(ITEMS)])
    codes = rng.integers(0, ITEMS, count * n)
    scores = np.sort(rng.random((count, n), dtype=np.float32), axis=1)[:, ::-1].ravel()
    ranks = np.tile(np.arange(1, n + 1, dtype=np.int32), count)
    values = pa.StructArray.from_arrays([item_ids.take(pa.array(codes)), pa.array(scores), pa.array(ranks)],
                                        names=[C.ITEM_ID, C.SCORE, C.RANK])
    items = pa.ListArray.from_arrays(pa.array(np.arange(0, count * n + 1, n, dtype=np.int32)), values)
    return pa.table({
        C.USER_ID: pa.array([f"user-{u}" for u in range(first, first + count)]),
        C.VARIANT: pa.array([variant] * count),
        C.ITEMS: items,
        C.MODEL_NAME: pa.array(["clickrec-als"] * count),
        C.MODEL_VERSION: pa.array(np.full(count, 1, dtype=np.int32)),
        C.SOURCE: pa.array([C.SOURCE_BATCH] * count),
        C.UPDATED_AT: pa.array(np.full(count, np.datetime64("2026-01-01T00:00:00", "us"))),
    })


def write_gold(root: Path, users: int, n: int, change_feed: bool) -> dict[str, Any]:
    from deltalake import write_deltalake

    from clickrec import columns as C
    from clickrec.io.lake import Lake

    lake = Lake.from_config(_config(root))
    uri = lake.uri(C.GOLD_RECOMMENDATIONS)
    shutil.rmtree(root / "lake", ignore_errors=True)
    t0 = time.monotonic()
    chunk = max(1, users // 10)
    first = True
    for v, variant in enumerate(VARIANTS):
        for start in range(0, users, chunk):
            rows = gold_rows(start, min(chunk, users - start), variant, n, seed=v * 1000 + start)
            write_deltalake(uri, rows, mode="append", partition_by=[C.VARIANT],
                            configuration=C.TABLE_PROPERTIES[C.GOLD_RECOMMENDATIONS] if change_feed and first else None)
            first = False
    popular = gold_rows(0, len(VARIANTS), "champion", n, seed=7).drop_columns([C.USER_ID])
    popular = popular.set_column(popular.schema.get_field_index(C.VARIANT), C.VARIANT, [list(VARIANTS)])
    write_deltalake(lake.uri(C.GOLD_POPULAR_ITEMS), popular, mode="overwrite")
    return {"kind": "gold", "users": users, "variants": len(VARIANTS), "n": n, "change_feed": change_feed,
            "write_seconds": round(time.monotonic() - t0, 1)}


def stream_commit(root: Path, users: int, n: int, seed: int) -> None:
    """The stream's gold write: STREAM_USERS users' new lists MERGEd into one variant."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from clickrec import columns as C
    from clickrec.io import delta_rs
    from clickrec.io.lake import Lake

    lake = Lake.from_config(_config(root))
    rng = np.random.default_rng(seed)
    picked = rng.choice(users, STREAM_USERS, replace=False)
    rows = gold_rows(0, STREAM_USERS, "champion", n, seed=seed)
    rows = rows.set_column(0, C.USER_ID, pa.array([f"user-{u}" for u in picked]))
    rows = rows.set_column(rows.schema.get_field_index(C.SOURCE), C.SOURCE,
                           pc.cast(pa.array([C.SOURCE_STREAM] * STREAM_USERS), pa.string()))
    delta_rs.merge_upsert(lake.require(C.GOLD_RECOMMENDATIONS), rows, keys=C.RECOMMENDATION_KEYS,
                          target_filter=f"t.`{C.VARIANT}` = 'champion'")


def _writer(root: str, users: int, n: int, stop: Any, commits: Any) -> None:
    seed = 10_000
    while not stop.is_set():
        try:
            stream_commit(Path(root), users, n, seed)
        except Exception as exc:  # a lost commit race with nothing else writing would be a bug: say it
            print(json.dumps({"kind": "writer_error", "error": repr(exc)}), flush=True)
            raise
        seed += 1
        with commits.get_lock():
            commits.value += 1


def reload_times(root: Path, users: int, n: int, repeats: int = 5) -> dict[str, Any]:
    """Full load once, then `repeats` x (one stream commit, `refresh()`), timed in this process."""
    from clickrec.serving.reader import RecommendationReader

    config = _config(root, "serve.min_reload_seconds=0")
    t0 = time.perf_counter()
    reader = RecommendationReader(config)
    full_s = time.perf_counter() - t0
    commit_s, refresh_s, hows = [], [], []
    for k in range(repeats):
        t0 = time.perf_counter()
        stream_commit(root, users, n, seed=k)
        commit_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        assert reader.refresh()
        refresh_s.append(time.perf_counter() - t0)
        hows.append(reader.full_reloads)
    return {"kind": "reload", "full_load_seconds": round(full_s, 2),
            "refresh_ms": [round(s * 1000, 1) for s in refresh_s],
            "refresh_median_ms": round(statistics.median(refresh_s) * 1000, 1),
            "full_reloads": reader.full_reloads, "stream_commit_seconds": round(statistics.median(commit_s), 2),
            "segments": len(reader.current.variants["champion"].segments),
            "snapshot_mib": round(sum(v.nbytes() for v in reader.current.variants.values()) / 2**20, 1)}


def _rss(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmRSS", "VmHWM")}






def bare_app() -> Any:
    """A bare ASGI app answering every request with the body in $CLICKREC_BENCH_BODY (uvicorn --factory)."""
    body = Path(os.environ[BODY_ENV]).read_bytes()
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    message = {"type": "http.response.body", "body": body}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(start)
        await send(message)

    return app


def http_runs(root: Path, users: int, n: int, per_client: int) -> list[dict[str, Any]]:
    load: dict[str, Any] = {"users": users, "per_client": per_client, "clients": CLIENTS, "n": n}
    port = free_port()
    extra = ("serve.poll_seconds=0.5", "serve.min_reload_seconds=1")
    server = subprocess.Popen([sys.executable, "-m", "clickrec.cli", "serve", "--port", str(port),
                               *_lake_args(root, extra)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    out: list[dict[str, Any]] = []
    try:
        t0 = time.monotonic()
        wait_healthy(port, server, timeout=600)
        out.append({"kind": "serve_started", "seconds": round(time.monotonic() - t0, 1), **_rss(server.pid)})
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/v1/recommendations/user-1?n=10")
        body = conn.getresponse().read()
        conn.close()
        out.append({"kind": "http", "case": "serve, idle", **closed_loop(port, seed=100, **load)})
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads of this one
        stop, commits = ctx.Event(), ctx.Value("i", 0)
        writer = ctx.Process(target=_writer, args=(str(root), users, n, stop, commits))
        writer.start()
        try:
            before = _version(port)
            while commits.value == 0 and writer.is_alive():  # committing before the clients start
                time.sleep(0.1)
            result = closed_loop(port, seed=200, **load)
        finally:
            stop.set()
            writer.join(timeout=600)
        after = _version(port)
        out.append({"kind": "http", "case": "serve, writer committing", **result, "commits": commits.value,
                    "versions_served": after - before})
        out.append({"kind": "serve_after", **_rss(server.pid)})
    finally:
        server.terminate()
        server.wait(timeout=30)
    body_file = root / "body.json"
    body_file.write_bytes(body)
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "benchmarks.serving_bench:bare_app", "--factory",
                             "--port", str(bare_port), "--log-level", "warning", "--no-access-log"],
                            env={**os.environ, BODY_ENV: str(body_file)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_healthy(bare_port, bare, timeout=600)
        out.append({"kind": "http", "case": "bare uvicorn app, same body", **closed_loop(bare_port, seed=100, **load)})
    finally:
        bare.terminate()
        bare.wait(timeout=30)
    return out


def _version(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/healthz")
    version = int(json.loads(conn.getresponse().read())["table_version"])
    conn.close()
    return version


def run(argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--requests-per-client", type=int, default=2000)
    parser.add_argument("--no-change-feed", action="store_true")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    root = WORK / f"u{args.users}_n{args.n}"
    results: list[dict[str, Any]] = []
    for step in (lambda: write_gold(root, args.users, args.n, not args.no_change_feed),
                 lambda: reload_times(root, args.users, args.n)):
        results.append(step())
        print(json.dumps(results[-1]), flush=True)
    for result in http_runs(root, args.users, args.n, args.requests_per_client):
        results.append(result)
        print(json.dumps(result), flush=True)
    meta = {"date": f"{started:%Y-%m-%d %H:%M}", "load_before": round(load_before, 1),
            "load_after": round(os.getloadavg()[0], 1), **vars(args)}
    print(json.dumps({"kind": "meta", **meta}), flush=True)
    return render_section(meta, results)


def render_section(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    by = {r["kind"]: r for r in results if r["kind"] != "http"}
    runs = {r["case"]: r for r in results if r["kind"] == "http"}
    gold, reload, started, after = by["gold"], by["reload"], by["serve_started"], by["serve_after"]
    bare = runs["bare uvicorn app, same body"]
    busy = runs["serve, writer committing"]
    peak_gib = max(started["VmHWM"], after["VmHWM"]) / 1024
    feed = "on" if gold["change_feed"] else "off"
    command = (f".venv/bin/python -m benchmarks.serving_bench --users {meta['users']} --n {meta['n']} "
               f"--requests-per-client {meta['requests_per_client']}" + (" --no-change-feed" if meta["no_change_feed"] else ""))
    lines = [
        "## Serving snapshot: memory, reload, HTTP tail under a writer",
        "",
        f"- date: {meta['date']} UTC; machine: {_machine()}",
        f"- command: `{command}`",
        f"- load average (1 min) before / after: {meta['load_before']:.1f} / {meta['load_after']:.1f}",
        f"- data: gold/recommendations of {gold['users']:,} users x {gold['variants']} variants x n = {gold['n']} "
        f"(ten delta-rs data files per variant, change data feed {feed}; written in {gold['write_seconds']} s); "
        f"a stream commit = clickrec.io.delta_rs.merge_upsert of {STREAM_USERS} users' lists into one variant",
        f"- client: {CLIENTS} threads in the benchmark's process, Python `http.client`, one keep-alive "
        "connection each; 90 % known users, 10 % unknown",
        "",
        "| measurement | value | goal |",
        "|---|---:|---|",
        f"| RSS of `clickrec serve` after start / after the runs (peak VmHWM) | {started['VmRSS']:,.0f} / "
        f"{after['VmRSS']:,.0f} MiB ({max(started['VmHWM'], after['VmHWM']):,.0f} MiB) | <= 1 GiB: "
        f"{'met' if peak_gib <= 1 else 'NOT met'} |",
        f"| snapshot arrays (segments, masks) | {reload['snapshot_mib']:,.0f} MiB | |",
        f"| full load (start) | {reload['full_load_seconds']:.1f} s | |",
        f"| reload after one stream commit, median of {len(reload['refresh_ms'])} ({reload['refresh_ms']} ms; "
        f"{reload['full_reloads']} full) | {reload['refresh_median_ms']:.0f} ms | <= 200 ms: "
        f"{'met' if reload['refresh_median_ms'] <= 200 else 'NOT met'} |",
        f"| the stream commit itself (delta-rs MERGE, median) | {reload['stream_commit_seconds']:.2f} s | |",
        "",
        "| HTTP, 16 concurrent clients | req/s | p50 ms | p99 ms | errors | requests |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, r in runs.items():
        label = case
        if case == "serve, writer committing":
            label += f" ({r['commits']} commits, {r['versions_served']} versions swapped in)"
        lines.append(f"| {label} | {r['requests_per_second']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['errors']} | {r['samples']:,} |")
    ratio = busy["p99_ms"] / bare["p99_ms"]
    idle_ratio = runs["serve, idle"]["p99_ms"] / bare["p99_ms"]
    lines += [
        "",
        f"p99 of `clickrec serve` over the bare app: {idle_ratio:.2f}x idle, {ratio:.2f}x with the writer "
        f"committing (goal <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", type=Path, help="also write the section into this file")
    args, rest = parser.parse_known_args()
    section = run(rest)
    from benchmarks.run import emit

    emit(section, args.markdown, "serving_bench")


if __name__ == "__main__":
    main()
