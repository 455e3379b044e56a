"""The JVM-free read path on serving tables written with delta-rs: library, validation, HTTP app.

The tables are written here with `deltalake.write_deltalake` in the shape clickrec publish
writes (checked against a real publish in tests/integration/test_publish.py), so these tests
need neither Spark nor a model.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from fastapi.testclient import TestClient

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError, NotFoundError
from clickrec.io.lake import Lake
from clickrec.serving.api import create_app, endpoint_label
from clickrec.serving.reader import RecommendationReader, recommendations, validate_request
from tests.support.config import REPO_ROOT, make_config

ITEM = pa.struct([(C.ITEM_ID, pa.string()), (C.SCORE, pa.float32()), (C.RANK, pa.int32())])
WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


def _items(ids: list[str], top: float = 1.0) -> list[dict]:
    return [{C.ITEM_ID: i, C.SCORE: top - r * 0.1, C.RANK: r + 1} for r, i in enumerate(ids)]


def write_recs(config: ClickrecConfig, rows: list[tuple[str, str, list[str], int]], mode: str = "overwrite") -> None:
    """(user_id, variant, item ids, model_version) rows -> gold/recommendations."""
    table = pa.table({
        C.USER_ID: [r[0] for r in rows],
        C.VARIANT: [r[1] for r in rows],
        C.ITEMS: pa.array([_items(r[2]) for r in rows], type=pa.list_(ITEM)),
        C.MODEL_NAME: ["clickrec-als"] * len(rows),
        C.MODEL_VERSION: pa.array([r[3] for r in rows], type=pa.int32()),
        C.SOURCE: [C.SOURCE_BATCH] * len(rows),
        C.UPDATED_AT: pa.array([WHEN] * len(rows), type=pa.timestamp("us")),
    })
    write_deltalake(Lake.from_config(config).uri(C.GOLD_RECOMMENDATIONS), table, mode=mode, partition_by=[C.VARIANT])


def write_popular(config: ClickrecConfig, rows: list[tuple[str, list[str]]]) -> None:
    table = pa.table({
        C.VARIANT: [r[0] for r in rows],
        C.ITEMS: pa.array([_items(r[1], top=100.0) for r in rows], type=pa.list_(ITEM)),
        C.MODEL_NAME: ["clickrec-als"] * len(rows),
        C.MODEL_VERSION: pa.array([1] * len(rows), type=pa.int32()),
        C.SOURCE: [C.SOURCE_POPULAR] * len(rows),
        C.UPDATED_AT: pa.array([WHEN] * len(rows), type=pa.timestamp("us")),
    })
    write_deltalake(Lake.from_config(config).uri(C.GOLD_POPULAR_ITEMS), table, mode="overwrite")


@pytest.fixture()
def served(tmp_path: Path) -> ClickrecConfig:
    config = make_config(tmp_path, serve={"poll_seconds": 0.05, "max_n": 50})
    write_recs(config, [("u1", "champion", ["a", "b", "c"], 2), ("u2", "champion", ["c", "d"], 2),
                        ("u1", "challenger", ["z", "y"], 3)])
    write_popular(config, [("champion", ["p1", "p2", "p3"]), ("challenger", ["q1"])])
    return config


def test_known_user_gets_their_list_cut_to_n(served: ClickrecConfig) -> None:
    got = RecommendationReader(served).recommendations("u1", n=2)
    assert got[C.SOURCE] == C.SOURCE_BATCH and got[C.VARIANT] == "champion"
    assert [i[C.ITEM_ID] for i in got[C.ITEMS]] == ["a", "b"]
    assert [i[C.RANK] for i in got[C.ITEMS]] == [1, 2]
    assert got[C.ITEMS][0][C.SCORE] == pytest.approx(1.0) and got[C.MODEL_VERSION] == 2
    assert got["table_version"] == 0 and got[C.UPDATED_AT] == WHEN.isoformat()


def test_variants_side_by_side_and_unknown_user_gets_popular(served: ClickrecConfig) -> None:
    reader = RecommendationReader(served)
    assert [i[C.ITEM_ID] for i in reader.recommendations("u1", variant="challenger")[C.ITEMS]] == ["z", "y"]
    # u2 has no challenger list: the challenger's popular list
    fallback = reader.recommendations("u2", variant="challenger")
    assert fallback[C.SOURCE] == C.SOURCE_POPULAR and [i[C.ITEM_ID] for i in fallback[C.ITEMS]] == ["q1"]
    stranger = reader.recommendations("nobody", n=2)
    assert stranger[C.SOURCE] == C.SOURCE_POPULAR
    assert [i[C.ITEM_ID] for i in stranger[C.ITEMS]] == ["p1", "p2"]
    with pytest.raises(NotFoundError, match="variant 'shadow' is not published"):
        reader.recommendations("u1", variant="shadow")


def test_champion_readers_get_the_popular_list_until_a_model_is_champion(tmp_path: Path) -> None:
    """A first model worse than popularity is registered as challenger only (clickrec.ml.promotion)."""
    config = make_config(tmp_path)
    write_recs(config, [("u1", "challenger", ["z", "y"], 1)])
    write_popular(config, [("challenger", ["q1", "q2"])])
    reader = RecommendationReader(config)
    for user in ("u1", "nobody"):
        got = reader.recommendations(user)
        assert (got[C.VARIANT], got[C.SOURCE], got[C.MODEL_VERSION]) == ("champion", C.SOURCE_POPULAR, None)
        assert [i[C.ITEM_ID] for i in got[C.ITEMS]] == ["q1", "q2"]
    assert [i[C.ITEM_ID] for i in reader.recommendations("u1", variant="challenger")[C.ITEMS]] == ["z", "y"]
    with pytest.raises(NotFoundError, match="variant 'shadow' is not published"):
        reader.recommendations("u1", variant="shadow")


def test_nothing_published_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not published yet"):
        RecommendationReader(make_config(tmp_path)).recommendations("u1")


@pytest.mark.parametrize(
    ("user_id", "n", "match"),
    [("u1", 0, "n=0"), ("u1", 51, "n=51"), ("", 5, "user_id"), ("x" * 129, 5, "user_id"),
     ("u\n1", 5, "control"), (" u1", 5, "whitespace")],
)
def test_bad_requests_name_the_parameter(user_id: str, n: int, match: str) -> None:
    with pytest.raises(InputError, match=match):
        validate_request(user_id, n, max_n=50, max_user_id_length=128)


def test_reader_reloads_when_the_version_changes(served: ClickrecConfig) -> None:
    reader = RecommendationReader(served)
    before = reader.current
    assert reader.refresh() is False and reader.current is before  # same version: same snapshot
    write_recs(served, [("u1", "champion", ["new"], 4)], mode="append")
    time.sleep(0.06)
    # The module-level call polls too: a new version is visible after serve.poll_seconds.
    assert recommendations("u3", config=served)[C.SOURCE] == C.SOURCE_POPULAR
    assert reader.refresh() is True and reader.current.table_version == 1 and reader.reloads == 1
    assert before.table_version == 0  # the old snapshot is untouched (immutable)


def test_http_contract(served: ClickrecConfig) -> None:
    with TestClient(create_app(served)) as client:
        ok = client.get("/v1/recommendations/u1", params={"n": 2})
        assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
        body = ok.json()
        assert body[C.USER_ID] == "u1" and [i[C.ITEM_ID] for i in body[C.ITEMS]] == ["a", "b"]
        assert client.get("/v1/recommendations/nobody").json()[C.SOURCE] == C.SOURCE_POPULAR
        assert client.get("/v1/recommendations/u1", params={"variant": "challenger"}).json()[C.MODEL_VERSION] == 3

        missing = client.get("/v1/recommendations/u1", params={"variant": "shadow"})
        assert missing.status_code == 404 and "shadow" in missing.json()["detail"]
        for params in ({"n": 0}, {"n": 51}, {"n": "ten"}, {"variant": "Bad Variant!"}):
            bad = client.get("/v1/recommendations/u1", params=params)
            assert bad.status_code == 422, params
            assert bad.json()["detail"][0]["loc"][-1] in ("n", "variant")
        too_long = client.get("/v1/recommendations/" + "x" * 129)
        assert too_long.status_code == 422 and too_long.json()["detail"][0]["loc"][-1] == "user_id"
        control = client.get("/v1/recommendations/u%091")
        assert control.status_code == 422 and "control" in control.json()["detail"][0]["msg"]

        health = client.get("/healthz").json()
        assert health["status"] == "ok" and health["variants"] == {"champion": 2, "challenger": 1}
        metrics = client.get("/metrics").text
        assert 'clickrec_http_requests_total{endpoint="/v1/recommendations/{user_id}",status="200"} 3.0' in metrics
        assert 'status="404"' in metrics and 'status="422"' in metrics
        assert 'clickrec_serving_table_version{table="gold/recommendations"} 0.0' in metrics
        assert "clickrec_http_request_seconds_bucket" in metrics and "u1" not in metrics


def test_http_serves_a_new_version_without_restart(served: ClickrecConfig) -> None:
    with TestClient(create_app(served)) as client:
        assert client.get("/v1/recommendations/u2").json()[C.MODEL_VERSION] == 2
        write_recs(served, [("u2", "champion", ["fresh"], 5)])
        deadline = time.monotonic() + 10
        while client.get("/healthz").json()["table_version"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        body = client.get("/v1/recommendations/u2").json()
        assert body[C.MODEL_VERSION] == 5 and [i[C.ITEM_ID] for i in body[C.ITEMS]] == ["fresh"]
        assert 'clickrec_serving_reloads_total 1.0' in client.get("/metrics").text


def test_not_published_service_says_503(tmp_path: Path) -> None:
    with TestClient(create_app(make_config(tmp_path), poll=False)) as client:
        assert client.get("/healthz").status_code == 503
        assert client.get("/v1/recommendations/u1").status_code == 503


def test_endpoint_labels_are_bounded() -> None:
    assert endpoint_label("/v1/recommendations/anything") == "/v1/recommendations/{user_id}"
    assert endpoint_label("/healthz") == "/healthz" and endpoint_label("/admin") == "other"


def test_the_read_path_imports_no_spark() -> None:
    code = ("import sys, clickrec.serving, clickrec.serving.api, clickrec.cli; "
            "assert 'pyspark' not in sys.modules, sorted(m for m in sys.modules if 'spark' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_lists_without_a_popular_row_are_not_ready_not_missing() -> None:
    # The stream can write a variant's lists before the first publish writes its popular row:
    # an unknown user then gets "not published yet" (503 over HTTP), not "no such variant".
    from clickrec.errors import NotPublishedError
    from clickrec.serving.reader import Snapshot, render
    from clickrec.serving.snapshot import ItemNames, VariantLists, build_segment

    names = ItemNames()
    one = pa.table({C.USER_ID: ["u1"], C.ITEMS: pa.array([_items(["a"])], type=pa.list_(ITEM)),
                    C.MODEL_NAME: ["m"], C.MODEL_VERSION: pa.array([1], pa.int32()), C.SOURCE: [C.SOURCE_STREAM],
                    C.UPDATED_AT: pa.array([WHEN], pa.timestamp("us"))})
    snap = Snapshot(table_version=3, popular_version=None,
                    variants={"champion": VariantLists.of(build_segment(one, names), names)}, popular={})
    with pytest.raises(NotPublishedError, match="no popular list"):
        render(snap, "nobody", 5, "champion")
    with pytest.raises(NotFoundError, match="variant 'shadow' is not published") as missing:
        render(snap, "nobody", 5, "shadow")
    assert not isinstance(missing.value, NotPublishedError)
