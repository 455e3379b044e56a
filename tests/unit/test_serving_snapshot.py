"""The columnar snapshot and its incremental reload, on real delta-rs tables; healthz and metrics.

The key property: a snapshot brought forward from an older one with what the newer Delta
versions changed holds exactly what a full read of the newer version holds, for per-user
replaces (the stream's MERGE), deletes, appends, several versions at once and an overwrite, with
the change data feed on and off. Time is a fake clock: no test sleeps.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from fastapi.testclient import TestClient

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.io.lake import Lake
from clickrec.serving.api import create_app
from clickrec.serving.reader import RecommendationReader, Snapshot, full_snapshot, update_snapshot
from clickrec.serving.snapshot import ItemNames, VariantLists, build_segment
from tests.support.config import make_config

ITEM = pa.struct([(C.ITEM_ID, pa.string()), (C.SCORE, pa.float32()), (C.RANK, pa.int32())])
SCHEMA = pa.schema([(C.USER_ID, pa.string()), (C.VARIANT, pa.string()), (C.ITEMS, pa.list_(ITEM)),
                    (C.MODEL_NAME, pa.string()), (C.MODEL_VERSION, pa.int32()), (C.SOURCE, pa.string()),
                    (C.UPDATED_AT, pa.timestamp("us"))])
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


def rows_table(rows: list[tuple[str, str, list[str], int, str]], minute: int = 0) -> pa.Table:
    """(user, variant, item ids, model_version, source) -> gold/recommendations rows."""
    return pa.table({
        C.USER_ID: [r[0] for r in rows],
        C.VARIANT: [r[1] for r in rows],
        C.ITEMS: pa.array([[{C.ITEM_ID: i, C.SCORE: 1.0 - k / 8, C.RANK: k + 1} for k, i in enumerate(r[2])]
                           for r in rows], type=pa.list_(ITEM)),
        C.MODEL_NAME: ["clickrec-als"] * len(rows),
        C.MODEL_VERSION: pa.array([r[3] for r in rows], pa.int32()),
        C.SOURCE: [r[4] for r in rows],
        C.UPDATED_AT: pa.array([WHEN + dt.timedelta(minutes=minute)] * len(rows), pa.timestamp("us")),
    }, schema=SCHEMA)


def batch_rows(users: range, variant: str, version: int) -> list[tuple[str, str, list[str], int, str]]:
    return [(f"u{u}", variant, [f"i{(u * 7 + k) % 50}" for k in range(3 + u % 4)], version, C.SOURCE_BATCH)
            for u in users]


def dump(snap: Snapshot) -> dict[str, dict[str, Any]]:
    """Every live row of the snapshot, by variant and user (what a lookup can return)."""
    return {v: {u: lists.row(u) for u in lists.users()} for v, lists in snap.variants.items()}


def stream_replace(uri: str, rows: list[tuple[str, str, list[str], int, str]], minute: int) -> None:
    """The stream's write: a MERGE by (user_id, variant) within the variant's partition."""
    from clickrec.io import delta_rs

    delta_rs.merge_upsert(DeltaTable(uri), rows_table(rows, minute), keys=C.RECOMMENDATION_KEYS,
                          target_filter=f"t.`{C.VARIANT}` = '{rows[0][1]}'")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("change_feed", [False, True], ids=["file-diff", "change-feed"])
def test_incremental_reload_equals_a_full_read_of_every_version(tmp_path: Path, change_feed: bool) -> None:
    uri = str(tmp_path / "recs")
    config = dict(C.TABLE_PROPERTIES[C.GOLD_RECOMMENDATIONS]) if change_feed else None
    write_deltalake(uri, rows_table(batch_rows(range(0, 30), "challenger", 2)), partition_by=[C.VARIANT],
                    configuration=config)
    for start in range(0, 80, 10):  # several small data files: a change rewrites some of them only
        write_deltalake(uri, rows_table(batch_rows(range(start, start + 10), "champion", 1)), mode="append")
    names = ItemNames()
    first = full_snapshot(DeltaTable(uri), None, names)
    changes = [
        # the stream replaces a few users' lists (one of them new) in one variant
        lambda: stream_replace(uri, [(f"u{u}", "champion", ["fresh", f"i{u}"], 1, C.SOURCE_STREAM)
                                     for u in (3, 41, 99)], minute=1),
        # ... and again, the same user twice in a row
        lambda: stream_replace(uri, [("u3", "champion", ["fresher"], 1, C.SOURCE_STREAM)], minute=2),
        lambda: DeltaTable(uri).delete(f"`{C.USER_ID}` IN ('u5', 'u45') AND `{C.VARIANT}` = 'champion'"),
        lambda: write_deltalake(uri, rows_table(batch_rows(range(100, 105), "shadow", 7)), mode="append"),
        # every challenger list goes: the variant leaves the snapshot
        lambda: DeltaTable(uri).delete(f"`{C.VARIANT}` = 'challenger'"),
    ]
    snap, hows = first, []
    for change in changes:
        change()
        recs = DeltaTable(uri)
        snap, how = update_snapshot(snap, recs, None, names)
        hows.append(how)
        assert dump(snap) == dump(full_snapshot(recs, None, ItemNames())), how
        assert snap.table_version == recs.version()
    assert not any(h.startswith("full") for h in hows), hows
    assert all(h.startswith("change feed" if change_feed else "files") for h in hows), hows
    assert "challenger" not in snap.variants and snap.variants["shadow"].count == 5
    assert snap.variants["champion"].row("u3")[C.ITEMS][0][C.ITEM_ID] == "fresher"  # type: ignore[index]
    assert snap.variants["champion"].row("u5") is None

    # every change at once, from the first snapshot
    jumped, how = update_snapshot(first, DeltaTable(uri), None, names)
    assert not how.startswith("full") and dump(jumped) == dump(snap)

    # an overwrite of the whole table: without the change feed it is read whole, and says why
    write_deltalake(uri, rows_table(batch_rows(range(200, 210), "champion", 9)), mode="overwrite")
    recs = DeltaTable(uri)
    after, how = update_snapshot(snap, recs, None, names)
    assert dump(after) == dump(full_snapshot(recs, None, ItemNames())), how
    assert how.startswith("change feed" if change_feed else "full: its new data files hold 10 of its 10 rows"), how


def test_a_full_read_holds_one_record_batch_in_arrow_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    from clickrec.serving import reader

    uri = str(tmp_path / "recs")
    write_deltalake(uri, rows_table(batch_rows(range(0, 40), "champion", 1)), partition_by=[C.VARIANT])
    write_deltalake(uri, rows_table(batch_rows(range(40, 100), "champion", 1)), mode="append")
    write_deltalake(uri, rows_table(batch_rows(range(0, 25), "challenger", 2)), mode="append")
    monkeypatch.setattr(reader, "BATCH_ROWS", 7)
    sizes: list[int] = []

    def counted(table: pa.Table, names: ItemNames) -> Any:
        sizes.append(table.num_rows)
        return build_segment(table, names)

    monkeypatch.setattr(reader, "build_segment", counted)
    snap = full_snapshot(DeltaTable(uri), None, ItemNames())
    assert max(sizes) <= 7 and sum(sizes) == 125  # every row, never more than a batch at once
    expected: dict[str, dict[str, Any]] = {}
    for row in DeltaTable(uri).to_pyarrow_table().to_pylist():
        expected.setdefault(row[C.VARIANT], {})[row[C.USER_ID]] = {
            C.ITEMS: row[C.ITEMS], C.MODEL_NAME: row[C.MODEL_NAME], C.MODEL_VERSION: row[C.MODEL_VERSION],
            C.SOURCE: row[C.SOURCE], C.UPDATED_AT: row[C.UPDATED_AT]}
    assert dump(snap) == expected
    lists = snap.variants["champion"]
    assert len(lists.segments) == 1 and list(lists.segments[0].users) == sorted(expected["champion"])


def test_a_user_in_several_parts_keeps_the_last_row() -> None:
    from clickrec.serving.snapshot import SegmentBuilder

    names = ItemNames()
    builder = SegmentBuilder()
    for version, users in ((1, range(0, 6)), (2, range(4, 9)), (3, range(8, 10))):
        part = rows_table([(f"u{u}", "champion", [f"v{version}"], version, C.SOURCE_BATCH) for u in users])
        builder.add(build_segment(part.drop_columns([C.VARIANT]), names))
    lists = VariantLists.of(builder.build(), names)
    assert lists.count == 10 and lists.users() == sorted(f"u{u}" for u in range(10))
    assert [lists.row(f"u{u}")[C.MODEL_VERSION] for u in range(10)] == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3]  # type: ignore[index]
    assert lists.row("u5")[C.ITEMS] == [{C.ITEM_ID: "v2", C.SCORE: 1.0, C.RANK: 1}]  # type: ignore[index]


def test_a_schema_change_is_read_whole(tmp_path: Path) -> None:
    uri = str(tmp_path / "recs")
    write_deltalake(uri, rows_table(batch_rows(range(10), "champion", 1)), partition_by=[C.VARIANT])
    names = ItemNames()
    snap = full_snapshot(DeltaTable(uri), None, names)
    wider = rows_table(batch_rows(range(10, 12), "champion", 1)).append_column("note", pa.array(["x", "y"]))
    write_deltalake(uri, wider, mode="append", schema_mode="merge")
    after, how = update_snapshot(snap, DeltaTable(uri), None, names)
    assert how.startswith("full: its schema") and after.variants["champion"].count == 12


def test_lookups_and_a_long_run_of_small_changes_stay_shallow() -> None:
    names = ItemNames()
    base = rows_table([*batch_rows(range(100), "champion", 1), ("u7", "champion", ["dup"], 1, C.SOURCE_BATCH)])
    lists = VariantLists.of(build_segment(base.drop_columns([C.VARIANT]), names), names)
    assert lists.count == 100  # u7 twice: the later row counts, as in a dict built over the rows
    assert lists.row("u7")[C.ITEMS] == [{C.ITEM_ID: "dup", C.SCORE: 1.0, C.RANK: 1}]  # type: ignore[index]
    got = lists.row("u10", n=2)
    assert got is not None and [i[C.ITEM_ID] for i in got[C.ITEMS]] == ["i20", "i21"]
    assert (got[C.MODEL_VERSION], got[C.SOURCE], got[C.UPDATED_AT]) == (1, C.SOURCE_BATCH, WHEN)
    assert lists.row("u100") is None and lists.row("") is None and lists.row("zzz") is None
    for step in range(40):
        added = rows_table([(f"u{step % 13}", "champion", [f"s{step}"], 2, C.SOURCE_STREAM),
                            (f"new{step}", "champion", ["n"], 2, C.SOURCE_STREAM)]).drop_columns([C.VARIANT])
        lists = lists.applied(removed_users=[f"u{50 + step}"], added=build_segment(added, names))
        assert len(lists.segments) <= 6  # snapshot.MAX_SEGMENTS: a deeper stack is merged
    assert lists.count == 100 + 40 - 40
    assert lists.row("u12")[C.ITEMS][0][C.ITEM_ID] == "s38"  # type: ignore[index]
    assert lists.row("u60") is None and lists.row("new39") is not None


@pytest.fixture()
def gold(tmp_path: Path) -> ClickrecConfig:
    config = make_config(tmp_path, serve={"poll_seconds": 1, "min_reload_seconds": 10, "max_staleness_seconds": 60})
    lake = Lake.from_config(config)
    write_deltalake(lake.uri(C.GOLD_RECOMMENDATIONS), rows_table(batch_rows(range(20), "champion", 1)),
                    partition_by=[C.VARIANT])
    popular = rows_table([("-", "champion", ["p1", "p2"], 1, C.SOURCE_POPULAR)]).drop_columns([C.USER_ID])
    write_deltalake(lake.uri(C.GOLD_POPULAR_ITEMS), popular)
    return config


def test_healthz_is_503_once_the_snapshot_is_stale(gold: ClickrecConfig) -> None:
    clock = Clock()
    reader = RecommendationReader(gold, clock=clock)
    uri = Lake.from_config(gold).uri(C.GOLD_RECOMMENDATIONS)
    with TestClient(create_app(gold, reader, poll=False)) as client:
        ok = client.get("/healthz")
        assert ok.status_code == 200 and ok.json()["staleness_seconds"] == 0
        clock.now += 59
        assert client.get("/healthz").status_code == 200
        clock.now += 2  # no check for 61 s: nothing says the snapshot is the newest
        stale = client.get("/healthz")
        assert stale.status_code == 503 and stale.json()["status"] == "stale"
        assert client.get("/v1/recommendations/u1").status_code == 200  # lookups still answer
        client.app.state.refresh()  # a check finding the same versions makes it fresh again
        assert client.get("/healthz").status_code == 200

        # Reloads are rate-limited: a second commit within min_reload_seconds waits, stale meanwhile.
        stream_replace(uri, [("u1", "champion", ["a"], 1, C.SOURCE_STREAM)], minute=1)
        assert client.app.state.refresh() is True
        stream_replace(uri, [("u1", "champion", ["b"], 1, C.SOURCE_STREAM)], minute=2)
        clock.now += 5
        assert client.app.state.refresh() is False
        body = client.get("/healthz").json()
        assert (body["table_version"], body["latest_table_version"]) == (1, 2) and body["staleness_seconds"] == 5
        clock.now += 5
        assert client.app.state.refresh() is True
        assert client.get("/v1/recommendations/u1").json()[C.ITEMS][0][C.ITEM_ID] == "b"
        body = client.get("/healthz").json()
        assert body["table_version"] == 2 and body["staleness_seconds"] == 0 and body["reloads"] == 2


def test_failed_reloads_are_counted_and_the_old_snapshot_stays(gold: ClickrecConfig) -> None:
    clock = Clock()
    reader = RecommendationReader(gold, clock=clock)
    uri = Lake.from_config(gold).uri(C.GOLD_RECOMMENDATIONS)
    before = {a["path"] for a in pa.table(DeltaTable(uri).get_add_actions()).to_pylist()}
    stream_replace(uri, [("u1", "champion", ["lost"], 1, C.SOURCE_STREAM)], minute=1)
    for action in pa.table(DeltaTable(uri).get_add_actions()).to_pylist():
        if action["path"] not in before:
            (Path(uri) / action["path"]).unlink()  # the new version's data file is gone
    with TestClient(create_app(gold, reader, poll=False)) as client:
        for attempt in (1, 2):
            clock.now += 31
            assert client.app.state.refresh() is False
            metrics = client.get("/metrics").text
            assert f"clickrec_serving_reload_failures_total {attempt}.0" in metrics
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["reload_failures"] == 2
        assert "reloading gold/recommendations at v1" in health.json()["last_error"]
        assert health.json()["table_version"] == 0 and health.json()["latest_table_version"] == 1
        served = client.get("/v1/recommendations/u1").json()
        assert served["table_version"] == 0 and served[C.ITEMS][0][C.ITEM_ID] != "lost"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_on_their_own_port(tmp_path: Path, gold: ClickrecConfig) -> None:
    port = _free_port()
    config = make_config(tmp_path, serve={"metrics_port": port})
    with TestClient(create_app(config, poll=False)) as client:
        assert client.get("/v1/recommendations/u1").status_code == 200
        assert client.get("/metrics").status_code == 404  # not on the API's port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        assert resp.status == 200 and resp.getheader("content-type", "").startswith("text/plain")
        assert 'clickrec_http_requests_total{endpoint="/v1/recommendations/{user_id}",status="200"} 1.0' in text
        assert "clickrec_serving_reload_failures_total 0.0" in text
        assert 'clickrec_serving_users{variant="champion"} 20.0' in text
