"""Ingest throughput vs a plain CSV -> Delta copy of the same file, with peak memory of both.

    .venv/bin/python -m benchmarks.ingest_bench --events 1000000 [--events 10000000]

For each size: generate a REES46 CSV once (cached under .bench/ingest/), then, in the same run,
each in a fresh process (its own JVM, so memory is its own):

- copy:   spark.read.csv(path, header=True).write.format("delta").save(...)  -- the ceiling:
          one parse, one write, no validation, no dedup, no silver;
- ingest: clickrec.ingest.ingest(...) on an empty lake -- parse, validate, GX data docs,
          quarantine, dedup, bronze, sessionised dwell, silver, indexes.

Throughput is events / seconds of the job itself (session start excluded, and reported apart);
peak memory is the largest summed RSS of the worker's process tree (Python driver + JVM),
sampled every 0.2 s. Prints one JSON object per measurement and returns a Markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORK = Path(".bench/ingest")
SEED = 42


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _tree_rss(pid: int) -> int:
    """Summed resident memory (bytes) of `pid` and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        todo.extend(_children(p))
    return total


def _measure(cmd: list[str]) -> dict[str, Any]:
    """Run a worker, sampling its tree's RSS; return its JSON result plus peak_rss_bytes."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        ticks = 0
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            if ticks % 5 == 0:
                loads.append(os.getloadavg()[0])
            ticks += 1
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_bytes"] = peak
    result["load_1min"] = [round(min(loads), 1), round(max(loads), 1)] if loads else None
    result["process_seconds"] = round(time.monotonic() - started, 2)
    return result


def _config(lake: Path) -> Any:
    from clickrec.config import load_config

    return load_config("conf/local.yaml", [f"lake.root={lake}", "spark.log_level=ERROR",
                                           "spark.conf.spark.ui.showConsoleProgress=false"])


def worker(kind: str, data: Path, lake: Path) -> None:
    """One measurement in this process: prints {"kind", "events", "job_seconds", ...} as JSON."""
    from clickrec.spark import build_spark_session

    if lake.exists():
        shutil.rmtree(lake)
    t0 = time.monotonic()
    config = _config(lake)
    spark = build_spark_session(config)
    spark.range(1).count()  # the JVM and executors are up before the clock starts
    session_seconds = time.monotonic() - t0
    t1 = time.monotonic()
    if kind == "copy":
        spark.read.csv(str(data), header=True).write.format("delta").save(str(lake / "copy"))
        summary: dict[str, Any] = {}
    else:
        from clickrec.ingest import ingest

        summary = ingest(spark, config, input_path=str(data))
    job_seconds = time.monotonic() - t1
    events = int(summary.get("rows_read", 0)) or int(spark.read.format("delta").load(str(lake / "copy")).count())
    print(json.dumps({
        "kind": kind, "events": events, "job_seconds": round(job_seconds, 2),
        "session_seconds": round(session_seconds, 2),
        "events_per_second": round(events / job_seconds, 1),
        "accepted": summary.get("accepted"), "interactions": summary.get("interactions"),
        "phase_seconds": summary.get("phase_seconds"),
    }))
    spark.stop()


def _dataset(events: int) -> Path:
    from clickrec.generate import generate_clickstream

    path = WORK / f"events_{events}_seed{SEED}.csv"
    if not path.is_file():
        summary = generate_clickstream(path, events=events, seed=SEED)
        print(f"generated {path} in {summary['seconds']} s", file=sys.stderr)
    return path


def _load_range(result: dict[str, Any]) -> str:
    load = result.get("load_1min")
    return f"{load[0]:.1f}-{load[1]:.1f}" if load else "-"


def _machine() -> str:
    cores = os.cpu_count()
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    return f"{cores} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def run(argv: list[str]) -> str:
    """Measure copy and ingest for each --events; return the Markdown results section."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, action="append", required=True)
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    rows = []
    for events in args.events:
        data = _dataset(events)
        results = {}
        for kind in ("copy", "ingest"):
            cmd = [sys.executable, "-m", "benchmarks.ingest_bench", "--worker", kind,
                   "--data", str(data), "--lake", str(WORK / f"lake_{kind}_{events}")]
            results[kind] = _measure(cmd)
            print(json.dumps(results[kind]), flush=True)
            shutil.rmtree(WORK / f"lake_{kind}_{events}", ignore_errors=True)
        rows.append((events, data.stat().st_size, results["copy"], results["ingest"]))
    load_after = os.getloadavg()
    command = f".venv/bin/python -m benchmarks.ingest_bench {' '.join(f'--events {e}' for e in args.events)}"
    lines = [
        "## Ingest vs plain CSV -> Delta copy",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {_machine()}; Spark local[*] from conf/local.yaml (driver memory 4g)",
        f"- command: `{command}` (also `make bench`)",
        f"- load average (1 min) before / after: {load_before[0]:.1f} / {load_after[0]:.1f} "
        "(the machine is shared; throughput falls when others run)",
        "- events/s = events / job seconds (Spark session start excluded: it is in its own column);"
        " peak RSS = Python driver + JVM, summed, sampled every 0.2 s; load = the 1-minute load"
        " average sampled every second while each worker ran (min-max)",
        "",
        "| events | CSV size | copy events/s | ingest events/s | ingest / copy | copy peak RSS | ingest peak RSS | copy s | ingest s | session start s | load during copy / ingest |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for events, size, copy, ing in rows:
        ratio = ing["events_per_second"] / copy["events_per_second"]
        lines.append(
            f"| {events:,} | {size / 1024**2:,.0f} MiB | {copy['events_per_second']:,.0f} | "
            f"{ing['events_per_second']:,.0f} | {ratio:.2f}x | {copy['peak_rss_bytes'] / 1024**3:.2f} GiB | "
            f"{ing['peak_rss_bytes'] / 1024**3:.2f} GiB | {copy['job_seconds']:.1f} | "
            f"{ing['job_seconds']:.1f} | {copy['session_seconds']:.1f} / {ing['session_seconds']:.1f} | "
            f"{_load_range(copy)} / {_load_range(ing)} |"
        )
    phases = [(events, ing.get("phase_seconds")) for events, _, _, ing in rows if ing.get("phase_seconds")]
    if phases:
        lines += ["", "Ingest seconds by phase (from the ingest summary's `phase_seconds`):", ""]
        lines += [f"- {events:,} events: " + ", ".join(f"{k} {v:.1f}" for k, v in p.items()) for events, p in phases]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, action="append", help="events to generate (repeatable)")
    parser.add_argument("--worker", choices=("copy", "ingest"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--markdown", type=Path, help="also write the section into this file")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.lake)
        return
    section = run([x for e in (args.events or [1_000_000]) for x in ("--events", str(e))])
    from benchmarks.run import emit

    emit(section, args.markdown, "ingest_bench")


if __name__ == "__main__":
    main()
