"""`clickrec replay`: send a clickstream file to Kafka, line by line, as the stream reads it.

Each line becomes one record on kafka.clickstream_topic (keyed by user id, so a user's events
stay in order in one partition), throttled to stream.replay_rate events per second. What is sent
is what batch ingest would read of the same line, so the stream and ingest make the same tables
of the same file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError

log = logging.getLogger(__name__)


def _open_lines(path: Path) -> io.BufferedIOBase:
    """The file's bytes (gunzipped for *.gz), read line by line like batch ingest's text reader."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _complete_lines(handle: io.BufferedIOBase, path: Path, truncated: list[str]) -> Iterator[bytes]:
    """The file's lines; a compressed file cut off ends at its last complete line, as batch
    ingest reads it, and its path is appended to `truncated`."""
    held: bytes | None = None
    try:
        for line in handle:
            if held is not None:
                yield held
            held = line
    except EOFError:
        log.warning("%s is truncated; replaying the lines before the cut", path)
        truncated.append(str(path))
        if held is not None and held.endswith(b"\n"):
            yield held
        return
    if held is not None:
        yield held


def event_payloads(
    path: Path, config: ClickrecConfig, *, truncated: list[str] | None = None,
) -> Iterator[tuple[str | None, bytes]]:
    """(key, value bytes) per line of a CSV or JSON-lines clickstream file, in file order.

    A CSV row becomes an object of the source columns with their text values (what batch
    ingest reads, so both paths hash the same event_id); JSON lines are sent as they are. A
    line batch ingest would quarantine for its shape (not UTF-8, too few or too many fields) is
    sent as its raw bytes, which the stream quarantines too, raw line kept: the same file gives
    the same tables by either path. The key is the user id, so one user's events stay in one
    partition, in order. A truncated compressed file is sent up to its cut, and named in
    `truncated`.
    """
    ic = config.ingest
    name = path.name.lower().removesuffix(".gz")
    is_json = ic.file_format == "json" or (ic.file_format == "auto" and name.endswith((".json", ".jsonl", ".ndjson")))
    user_col = ic.column_mapping.get(C.USER_ID, C.USER_ID)
    header = list(ic.source_columns)
    cut: list[str] = [] if truncated is None else truncated
    with _open_lines(path) as handle:
        for raw_line in _complete_lines(handle, path, cut):
            raw = raw_line.rstrip(b"\r\n")
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield None, raw
                continue
            if is_json:
                try:
                    key = json.loads(line).get(user_col)
                except (json.JSONDecodeError, AttributeError):
                    key = None
                yield (None if key is None else str(key)), raw
                continue
            fields = next(csv.reader([line], delimiter=ic.delimiter), [])
            if ic.header and fields == header:
                continue
            if len(fields) != len(header):
                yield None, raw
                continue
            event = dict(zip(header, fields, strict=True))
            yield event.get(user_col), json.dumps(event, separators=(",", ":")).encode("utf-8")


def replay(config: ClickrecConfig, *, input_path: str, rate: float | None = None, topic: str | None = None) -> dict[str, Any]:
    """Send a clickstream file to Kafka at `rate` events/s with progress on stderr; the summary."""
    from clickrec.io.kafka import send_events

    path = Path(input_path)
    if not path.is_file():
        raise InputError(f"--input {input_path}: no such file (replay sends one CSV or JSON-lines file)")
    rate = config.stream.replay_rate if rate is None else rate
    if rate < 0:
        raise InputError(f"--rate {rate}: must be >= 0 (0 sends as fast as the broker acknowledges)")
    topic = topic or config.kafka.clickstream_topic

    def progress(sent: int, seconds: float) -> None:
        print(f"replay: {sent} events in {seconds:.1f}s ({sent / seconds if seconds else 0:.0f}/s)",
              file=sys.stderr, flush=True)

    truncated: list[str] = []
    result = send_events(config.kafka, topic, event_payloads(path, config, truncated=truncated), rate=rate,
                         on_progress=progress)
    warnings = [f"{input_path} is truncated: sent the lines before the cut"] if truncated else []
    return {"input": input_path, "topic": topic, "rate": rate, **result, "warnings": warnings}
