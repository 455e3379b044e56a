"""Each layout of conf/examples/ by configuration only: batch ingest, and the stream's parser.

The same small clickstream is written as a session-only tab-separated log (epoch seconds, no
event type), as RetailRocket's events.csv (epoch milliseconds, its own event names) and as an
export with its own header names (ISO times with an offset, ';'). Batch ingest must give the
events and interactions computed in plain Python (tests/support/layouts.py); the stream's
staging of what `clickrec replay` sends (clickrec.stream.staged_events, the query's own
parser) must accept, reject and identify every row as batch staging does. The real broker and
query run the same files in tests/services/test_stream_layouts.py.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.errors import InputError
from clickrec.ingest import ingest
from clickrec.io.files import list_input_files
from clickrec.io.lake import Lake
from clickrec.quality import load_suite
from clickrec.replay import event_payloads
from clickrec.staging import stage_event_lines, stage_events, suite_params
from clickrec.stream import staged_events
from tests.support.layouts import (
    LAYOUTS,
    expected_bronze,
    expected_counts,
    layout_config,
    write_layout,
)

BRONZE_KEY = (C.USER_ID, C.USER_SESSION, C.PRODUCT_ID, C.EVENT_TYPE, C.EVENT_TIME)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_ingest_of_each_example_layout(spark: SparkSession, tmp_path: Path, layout: str) -> None:
    config = layout_config(layout, tmp_path, ingest={"data_docs": False})
    events, bad_reason = write_layout(layout, tmp_path / "events.txt")

    summary = ingest(spark, config, input_path=str(tmp_path / "events.txt"))

    assert (summary["rows_read"], summary["accepted"], summary["quarantined"]) == (len(events) + 1, len(events), 1)
    assert summary["quarantined_by_reason"] == {bad_reason: 1}
    lake = Lake.from_config(config)
    bronze = lake.read(spark, C.BRONZE_EVENTS).select(*BRONZE_KEY).collect()
    assert Counter(tuple(r) for r in bronze) == expected_bronze(events)
    silver = {(r[C.USER_ID], r[C.ITEM_ID]): (r[C.VIEWS], r[C.CARTS], r[C.PURCHASES])
              for r in lake.read(spark, C.SILVER_INTERACTIONS).collect()}
    assert silver == expected_counts(events)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_stream_stages_replayed_layouts_as_batch_ingest_does(spark: SparkSession, tmp_path: Path, layout: str) -> None:
    config = layout_config(layout, tmp_path)
    path = tmp_path / "events.txt"
    events, _ = write_layout(layout, path)
    records = [(bytearray(value), "clickstream", 0, offset)
               for offset, (_, value) in enumerate(event_payloads(path, config))]
    kafka_df = spark.createDataFrame(records, "value binary, topic string, partition int, offset long")

    streamed = staged_events(kafka_df, config)
    suite = load_suite(config.ingest.events_suite, suite_params(config))
    batch = stage_events(spark, config, list_input_files(spark, str(path)), suite)

    def outcome(df):  # type: ignore[no-untyped-def]
        return Counter((r[C.EVENT_ID], tuple(r[C.REASONS])) for r in df.select(C.EVENT_ID, C.REASONS).collect())

    assert len(records) == len(events) + 1
    assert outcome(streamed) == outcome(batch)
    accepted = streamed.where(F.size(C.REASONS) == 0).select(*BRONZE_KEY).collect()
    assert Counter(tuple(r) for r in accepted) == expected_bronze(events)


def test_a_mapping_to_a_column_the_source_lacks_is_named(spark: SparkSession, tmp_path: Path) -> None:
    config = layout_config("retailrocket", tmp_path, ingest={"column_mapping": {"event_time": "ts"}})
    lines = spark.createDataFrame([("1433221332117,1,view,2,", "f")], f"{C.VALUE} string, {C.SOURCE_FILE} string")
    with pytest.raises(InputError, match=r"ingest\.column_mapping\.event_time: source column 'ts' is not in"):
        stage_event_lines(lines, config, file_format="csv", suite={"expectations": []})
