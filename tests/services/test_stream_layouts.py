"""Each layout of conf/examples/ through the real broker: `clickrec replay` sends the file, the
stream (in-process, --available-now) writes bronze and silver, with only the example's config.

What the tables must hold is computed in plain Python (tests/support/layouts.py), as in the
batch test of tests/integration/test_layouts.py, so either path is checked against the events.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from clickrec import columns as C
from clickrec.io.lake import Lake
from clickrec.replay import replay
from clickrec.services import ServiceProcess
from clickrec.stream import run_stream
from tests.support.layouts import (
    LAYOUTS,
    expected_bronze,
    expected_counts,
    layout_config,
    write_layout,
)

pytestmark = pytest.mark.slow  # a query per layout

BRONZE_KEY = (C.USER_ID, C.USER_SESSION, C.PRODUCT_ID, C.EVENT_TYPE, C.EVENT_TIME)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_replayed_layout_streams_into_bronze_and_silver(
    spark: SparkSession, kafka_service: ServiceProcess, tmp_path: Path, layout: str
) -> None:
    topic = f"layout-{layout}-{uuid.uuid4().hex[:6]}"
    config = layout_config(
        layout, tmp_path, kafka={"bootstrap_servers": kafka_service.url, "clickstream_topic": topic},
        stream={"trigger_seconds": 0.2, "query_name": f"layout-{layout}"}, ingest={"data_docs": False},
    )
    path = tmp_path / "events.txt"
    events, bad_reason = write_layout(layout, path)

    sent = replay(config, input_path=str(path), rate=0)
    summary = run_stream(spark, config, available_now=True)

    assert sent["sent"] == summary["rows_read"] == len(events) + 1
    assert (summary["accepted"], summary["quarantined"]) == (len(events), 1)
    lake = Lake.from_config(config)
    bronze = lake.read(spark, C.BRONZE_EVENTS).select(*BRONZE_KEY).collect()
    assert Counter(tuple(r) for r in bronze) == expected_bronze(events)
    silver = {(r[C.USER_ID], r[C.ITEM_ID]): (r[C.VIEWS], r[C.CARTS], r[C.PURCHASES])
              for r in lake.read(spark, C.SILVER_INTERACTIONS).collect()}
    assert silver == expected_counts(events)
    quarantined = lake.read(spark, C.BRONZE_QUARANTINE).collect()
    assert [list(r[C.REASONS]) for r in quarantined] == [[bad_reason]]
