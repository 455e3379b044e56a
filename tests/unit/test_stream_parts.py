"""The stream's pure parts: replay payloads, Kafka source options, progress records, config."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from clickrec.config import KafkaConfig, build_config
from clickrec.errors import ConfigError, ServiceError
from clickrec.io.kafka import stream_source_options
from clickrec.replay import event_payloads
from clickrec.stream import progress_record

HEADER = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"


def test_csv_rows_become_json_events_with_their_text_values(tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(f"{HEADER}\n2019-10-01 00:00:00 UTC,view,1,2,a.b,,1.50,u1,s1\n\n"
                "2019-10-01 00:00:05 UTC,cart,\"3\",2,,x,2,u2,s2\n")
    events = list(event_payloads(path, build_config()))
    assert [k for k, _ in events] == ["u1", "u2"]
    first = json.loads(events[0][1])
    assert first == {"event_time": "2019-10-01 00:00:00 UTC", "event_type": "view", "product_id": "1",
                     "category_id": "2", "category_code": "a.b", "brand": "", "price": "1.50",
                     "user_id": "u1", "user_session": "s1"}
    assert json.loads(events[1][1])["product_id"] == "3"  # CSV quoting undone, as batch ingest reads it


def test_json_lines_are_sent_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text('{"user_id": 7, "event_type": "view"}\nnot json\n\n')
    events = list(event_payloads(path, build_config()))
    assert events == [("7", b'{"user_id": 7, "event_type": "view"}'), (None, b"not json")]


def test_a_truncated_gzip_is_replayed_up_to_its_last_complete_line(tmp_path: Path) -> None:
    rows = "\n".join(f"2019-10-01 00:00:{i % 60:02d} UTC,view,{i},1,,b,1.0,7,s" for i in range(5000)) + "\n"
    whole = gzip.compress(rows.encode())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    complete = 0
    with gzip.open(cut, "rb") as handle, pytest.raises(EOFError):
        for line in handle:
            complete += line.endswith(b"\n")
    truncated: list[str] = []
    config = build_config({"ingest": {"header": False}})
    sent = list(event_payloads(cut, config, truncated=truncated))
    assert 0 < len(sent) == complete < 5000
    assert truncated == [str(cut)]
    assert json.loads(sent[-1][1])["product_id"] == str(complete - 1)  # the last whole line, in order


def test_source_options_come_from_config() -> None:
    opts = stream_source_options(KafkaConfig(bootstrap_servers="h:1"), topic="t", starting_offsets="earliest",
                                 max_offsets_per_trigger=5, fail_on_data_loss=False)
    assert opts == {"kafka.bootstrap.servers": "h:1", "subscribe": "t", "startingOffsets": "earliest",
                    "failOnDataLoss": "false", "maxOffsetsPerTrigger": "5"}
    assert "maxOffsetsPerTrigger" not in stream_source_options(
        KafkaConfig(bootstrap_servers="h:1"), topic="t", starting_offsets="latest",
        max_offsets_per_trigger=None, fail_on_data_loss=True)
    with pytest.raises(ServiceError, match=r"kafka\.bootstrap_servers"):
        stream_source_options(KafkaConfig(), topic="t", starting_offsets="earliest",
                              max_offsets_per_trigger=None, fail_on_data_loss=True)


def test_progress_record_keeps_rates_durations_and_lag() -> None:
    progress = {"batchId": 4, "timestamp": "2026-01-01T00:00:00.000Z", "numInputRows": 10,
                "inputRowsPerSecond": 5.0, "processedRowsPerSecond": 20.0, "batchDuration": 500,
                "durationMs": {"triggerExecution": 480},
                "sources": [{"endOffset": {"t": {"0": 10}},
                             "metrics": {"avgOffsetsBehindLatest": "3.0", "maxOffsetsBehindLatest": "7"}}]}
    record = progress_record(progress)
    assert record["batch_id"] == 4 and record["batch_duration_ms"] == 500
    assert record["processed_rows_per_second"] == 20.0 and record["input_rows_per_second"] == 5.0
    assert record["offsets_behind_latest"] == 7.0 and record["avg_offsets_behind_latest"] == 3.0


def test_stream_config_rejects_bad_values() -> None:
    assert build_config().stream.query_name == "clickstream-refresh"
    with pytest.raises(ConfigError, match=r"stream\.query_name"):
        build_config({"stream": {"query_name": "a/b"}})
    with pytest.raises(ConfigError, match=r"stream\.starting_offsets"):
        build_config({"stream": {"starting_offsets": "middle"}})
    with pytest.raises(ConfigError, match=r"stream\.typo"):
        build_config({"stream": {"typo": 1}})


def test_changed_keeps_new_and_different_rows_in_order_and_drops_identical_ones() -> None:
    from datetime import datetime

    import pyarrow as pa

    from clickrec.microbatch import changed_rows

    t = datetime(2019, 10, 1)
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("views", pa.int64()),
                        ("dwell_seconds", pa.float64()), ("last_seen", pa.timestamp("us")), ("rating", pa.float64())])

    def table(rows: list[tuple[object, ...]]) -> pa.Table:
        return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema=schema)

    held = table([("u1", "a", 1, 5.0, t, 1.5), ("u1", "b", 2, None, t, 2.0), ("u2", "a", 1, 1.0, t, 1.0),
                  ("u3", "z", 9, 9.0, t, 9.0)])
    rows = table([
        ("u2", "a", 1, 1.0, t, 1.0000001),                # rating differs
        ("u1", "b", 2, None, t, 2.0),                     # same, a null on both sides
        ("u1", "a", 1, 5.0, t, 1.5),                      # same
        ("u1", "c", 1, 0.0, t, 1.0),                      # new pair
        ("u2", "b", 1, None, t, 1.0),                     # new pair, with a null
        ("u3", "z", 9, 9.0, datetime(2019, 10, 2), 9.0),  # last_seen differs
    ])
    got = changed_rows(rows, held).to_pylist()
    assert [(r["user_id"], r["item_id"]) for r in got] == [("u2", "a"), ("u1", "c"), ("u2", "b"), ("u3", "z")]
    assert changed_rows(rows, held.slice(0, 0)).num_rows == rows.num_rows
    assert changed_rows(rows.slice(0, 0), held).num_rows == 0


def test_lines_batch_ingest_would_quarantine_are_sent_raw(tmp_path: Path) -> None:
    # Extra or missing fields and bytes that are not UTF-8: ingest quarantines such a line, so
    # replay sends it as it is (not JSON: the stream quarantines it) instead of dropping fields
    # or stopping with a UnicodeDecodeError.
    good = b"2019-10-01 00:00:00 UTC,view,1,2,a.b,,1.50,u1,s1"
    extra, short = good + b",surplus", b"2019-10-01 00:00:00 UTC,view,1,2,a.b,,1.50,u2"
    broken = b"2019-10-01 00:00:00 UTC,view,1,2,a.b,\xff\xfe,1.50,u3,s3"
    path = tmp_path / "e.csv"
    path.write_bytes(HEADER.encode() + b"\n" + b"\n".join([good, extra, short, broken]) + b"\n")
    events = list(event_payloads(path, build_config()))
    assert events[0][0] == "u1" and json.loads(events[0][1])["user_session"] == "s1"
    assert events[1:] == [(None, extra), (None, short), (None, broken)]


def test_only_lists_that_differ_from_gold_are_written() -> None:
    from clickrec import columns as C
    from clickrec.microbatch import changed_lists

    def held(user: str, items: list[tuple[str, float, int]], version: int = 3, source: str = "stream") -> dict:
        return {C.USER_ID: user, C.VARIANT: "champion", C.MODEL_NAME: "m", C.MODEL_VERSION: version,
                C.SOURCE: source, C.ITEMS: [{C.ITEM_ID: i, C.SCORE: s, C.RANK: r} for i, s, r in items]}

    same = [("a", 0.1, 1), ("b", 0.05, 2)]  # 0.1 is stored as float32: still the same list
    rows = [(u, "champion", same, "m", 3, "stream", None) for u in ("u1", "u2", "u3", "u4", "u5")]
    gold = [held("u1", [("a", float(np.float32(0.1)), 1), ("b", float(np.float32(0.05)), 2)]),
            held("u2", [("b", 0.05, 1), ("a", 0.1, 2)]),      # another order
            held("u3", same, version=2),                      # another model version
            held("u4", same, source="batch")]                 # a batch list
    assert [r[0] for r in changed_lists(rows, gold)] == ["u2", "u3", "u4", "u5"]  # u5: not in gold
