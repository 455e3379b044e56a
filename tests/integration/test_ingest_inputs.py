"""Ingest of awkward inputs: bad rows, the quality gate, MovieLens ratings, column mapping, CLI."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clickrec import columns as C
from clickrec.config import ClickrecConfig
from clickrec.errors import InputError
from clickrec.ingest import ingest
from clickrec.io.delta import table_exists
from clickrec.io.lake import Lake
from tests.support.cli import run_entry
from tests.support.config import make_config

REPO = Path(__file__).resolve().parents[2]
HEADER = ",".join(C.REES46_COLUMNS)


def good_line(i: int) -> str:
    return (f"2019-10-01 00:{i:02d}:00 UTC,view,{1000 + i % 3},2053013555631882655,"
            f"electronics.smartphone,apple,{100 + i}.50,{500 + i % 4},sess-{i % 4}")


# (raw bytes of the line, the reason it must be quarantined with)
BAD_ROWS: list[tuple[bytes, str]] = [
    (b"2019-10-32 25:61:00 UTC,view,1001,1,,apple,1.00,501,sess-1", "event_time_invalid"),
    (b"2019-10-01 01:00:00 UTC,view,1001,1,,apple,-3.00,501,sess-1", "price_negative"),
    (b"2019-10-01 01:01:00 UTC,click,1001,1,,apple,3.00,501,sess-1", "event_type_unknown"),
    (b"2019-10-01 01:02:00 UTC,view,1001,1,,apple,3.00,,sess-1", "user_id_missing"),
    (b"2019-10-01 01:03:00 UTC,view,1001,1,,app\xff\xfele,3.00,501,sess-1", "invalid_utf8"),
    (b"2019-10-01 01:04:00 UTC,view,1001,1,,apple,3.00,501,sess-1,surplus", "extra_columns"),
    (b"2019-10-01 01:06:00 UTC,view,1001,1,,apple,NaN,501,sess-1", "price_not_finite"),
    (b"2019-10-01 01:07:00 UTC,view,1001,1,,apple,Infinity,501,sess-1", "price_not_finite"),
]
TRUNCATED = (b"2019-10-01 01:05:00 UTC,view,10", "missing_columns")  # last line, no newline


def test_bad_rows_are_quarantined_with_their_reason(spark: SparkSession, config: ClickrecConfig, tmp_path: Path) -> None:
    good = [good_line(i) for i in range(12)]
    body = [HEADER.encode()] + [g.encode() for g in good[:6]] + [b for b, _ in BAD_ROWS] + [g.encode() for g in good[6:]]
    data = tmp_path / "bad.csv"
    data.write_bytes(b"\n".join(body) + b"\n" + TRUNCATED[0])

    summary = ingest(spark, config, input_path=str(data))

    expected = [*BAD_ROWS, TRUNCATED]
    assert summary["rows_read"] == len(good) + len(expected)
    assert summary["accepted"] == len(good) and summary["duplicates"] == 0
    assert summary["quarantined"] == len(expected)
    quarantine = Lake.from_config(config).read(spark, C.BRONZE_QUARANTINE).collect()
    assert len(quarantine) == len(expected)
    by_line = {r[C.RAW_LINE]: r for r in quarantine}
    for raw, reason in expected:
        text = raw.decode("utf-8", errors="replace")
        assert text in by_line, f"{text!r} not in quarantine"
        row = by_line[text]
        assert reason in row[C.REASONS], f"{text!r}: {row[C.REASONS]} lacks {reason}"
        assert row[C.SOURCE_FILE].endswith("bad.csv") and row[C.INGEST_RUN_ID] == summary["run_id"]
    assert all(summary["quarantined_by_reason"][reason] >= 1 for _, reason in expected)
    # GX saw the same failures the predicates quarantined
    gx = summary["quality"]
    assert gx["success"] is False
    assert {k: v for k, v in gx["unexpected"].items() if v} == summary["quarantined_by_reason"]
    assert Path(summary["data_docs"]).is_file()
    bronze = Lake.from_config(config).read(spark, C.BRONZE_EVENTS)
    assert sorted(r[C.PRICE] for r in bronze.collect()) == [100.5 + i for i in range(12)]
    # a rerun quarantines nothing twice
    again = ingest(spark, config, input_path=str(data))
    assert again["quarantined"] == len(expected) and again["accepted"] == 0
    assert Lake.from_config(config).read(spark, C.BRONZE_QUARANTINE).count() == len(expected)


def test_a_landing_folder_ingested_again_with_a_new_file_quarantines_old_rows_once(
    spark: SparkSession, tmp_path: Path
) -> None:
    config = make_config(tmp_path, ingest={"data_docs": False, "max_rejected_fraction": 0.9})
    landing = tmp_path / "landing"
    landing.mkdir()
    bad, reason = BAD_ROWS[1]
    # the same bad line twice in one file: two rows read, two rows quarantined
    (landing / "day1.csv").write_bytes(b"\n".join([good_line(0).encode(), bad, bad, BAD_ROWS[2][0]]) + b"\n")
    first = ingest(spark, config, input_path=str(landing))
    assert first["quarantined"] == 3
    (landing / "day2.csv").write_bytes(b"\n".join([good_line(1).encode(), bad]) + b"\n")
    second = ingest(spark, config, input_path=str(landing))  # another input: day1 + day2
    assert second["quarantined"] == 4  # every rejected row read is counted, as before
    rows = Lake.from_config(config).read(spark, C.BRONZE_QUARANTINE).collect()
    per_file: dict[str, int] = {}
    for r in rows:
        per_file[Path(r[C.SOURCE_FILE]).name] = per_file.get(Path(r[C.SOURCE_FILE]).name, 0) + 1
    assert per_file == {"day1.csv": 3, "day2.csv": 1}
    assert all(reason in r[C.REASONS] for r in rows if r[C.RAW_LINE] == bad.decode())


def test_the_quality_gate_stops_a_broken_feed_before_any_write(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path, ingest={"max_rejected_fraction": 0.2})
    data = tmp_path / "broken.csv"
    data.write_text("\n".join([HEADER, good_line(1), good_line(2)] + ["garbage"] * 3) + "\n")
    with pytest.raises(InputError, match="quality gate failed, 3 of 5 rows rejected"):
        ingest(spark, config, input_path=str(data))
    assert not any(table_exists(spark, Lake.from_config(config).path(t)) for t in (C.BRONZE_EVENTS, C.BRONZE_QUARANTINE))


def test_missing_input_names_the_path(spark: SparkSession, config: ClickrecConfig, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nothing-here"):
        ingest(spark, config, input_path=str(tmp_path / "nothing-here" / "*.csv"))


def test_scratch_of_a_killed_job_is_removed_by_the_next_ingest(
    spark: SparkSession, config: ClickrecConfig, tmp_path: Path
) -> None:
    """A SIGKILLed ingest cannot run its `finally`: the next one removes its old scratch."""
    staging = Path(Lake.from_config(config).path("_staging"))
    old_file = staging / "killed-run" / "batch" / "part-0.parquet"
    live_file = staging / "running-run" / "batch" / "part-0.parquet"
    for f in (old_file, live_file):
        f.parent.mkdir(parents=True)
        f.write_bytes(b"scratch")
    two_days_ago = os.path.getmtime(old_file) - 48 * 3600
    for p in (old_file, old_file.parent, old_file.parent.parent):
        os.utime(p, (two_days_ago, two_days_ago))
    src = tmp_path / "events.csv"
    src.write_text(HEADER + "\n" + "\n".join(good_line(i) for i in range(10)) + "\n")
    summary = ingest(spark, config, input_path=str(src))
    assert summary["stale_staging_removed"] == 1
    assert not old_file.parent.parent.exists()
    assert live_file.is_file()  # touched within stale_staging_hours: maybe another job's


def test_column_mapping_lets_a_session_only_log_in(spark: SparkSession, tmp_path: Path) -> None:
    config = make_config(tmp_path, ingest={
        "source_columns": ["ts", "action", "sku", "sid"],
        "column_mapping": {"event_time": "ts", "event_type": "action", "product_id": "sku",
                           "user_id": "sid", "user_session": "sid"},
    })
    data = tmp_path / "sessions.csv"
    data.write_text("ts,action,sku,sid\n2019-10-01 00:00:00,view,p1,s-1\n"
                    "2019-10-01 00:00:40,view,p2,s-1\n2019-10-01 00:01:00,cart,p2,s-2\n")
    summary = ingest(spark, config, input_path=str(data))
    assert (summary["accepted"], summary["quarantined"], summary["users"]) == (3, 0, 2)
    silver = {(r[C.USER_ID], r[C.ITEM_ID]): r for r in
              Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS).collect()}
    assert set(silver) == {("s-1", "p1"), ("s-1", "p2"), ("s-2", "p2")}
    assert silver[("s-1", "p1")][C.DWELL_SECONDS] == 40.0


@pytest.mark.parametrize(("content", "warning"), [
    (None, "the folder holds no input file; nothing was written"),
    ("", "no rows read from 1 file(s): empty, or only a header; nothing was written"),
    (HEADER + "\n", "no rows read from 1 file(s): empty, or only a header; nothing was written"),
], ids=["empty_folder", "empty_file", "header_only"])
def test_an_empty_input_warns_exits_0_and_commits_nothing(
    spark: SparkSession, config: ClickrecConfig, tmp_path: Path, content: str | None, warning: str
) -> None:
    """A scheduled run on an empty landing folder or file neither fails nor passes silently."""
    landing = tmp_path / "landing"
    landing.mkdir()
    if content is not None:
        (landing / "events.csv").write_text(content)
    summary = ingest(spark, config, input_path=str(landing))
    assert summary["rows_read"] == summary["accepted"] == summary["quarantined"] == 0
    assert [w.removeprefix(f"--input {landing}: ") for w in summary["warnings"]] == [warning]
    lake = Lake.from_config(config)
    assert not any(table_exists(spark, lake.path(t)) for t in (C.BRONZE_EVENTS, C.BRONZE_QUARANTINE, C.SILVER_INTERACTIONS))


def test_a_truncated_gzip_ingests_its_readable_lines_and_names_the_file_and_an_empty_one(
    spark: SparkSession, config: ClickrecConfig, tmp_path: Path
) -> None:
    whole = gzip.compress(("\n".join([HEADER] + [good_line(i % 60) .replace("sess-", f"s{i}-") for i in range(3000)])
                           + "\n").encode())
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    intact = tmp_path / "intact.csv"
    intact.write_text(HEADER + "\n" + good_line(1).replace("sess-", "other-") + "\n")
    empty = tmp_path / "empty.csv"  # named too, beside files with rows
    empty.write_text("")
    readable = 0  # complete lines before the cut, header included
    with gzip.open(cut, "rb") as handle, pytest.raises(EOFError):
        for line in handle:
            readable += line.endswith(b"\n")

    summary = ingest(spark, config, input_path=str(tmp_path / "*"))

    assert summary["truncated_files"] == [f"file:{cut}"]
    assert any("1 truncated file(s)" in w and str(cut) in w for w in summary["warnings"])
    assert any(w.startswith("1 empty file(s)") and str(empty) in w for w in summary["warnings"])
    assert summary["rows_read"] == readable - 1 + 1  # the cut file's rows (no header) and the intact file's row
    assert summary["accepted"] + summary["duplicates"] == summary["rows_read"] > 1000


def movielens_file() -> Path:
    folder = Path(os.environ.get("CLICKREC_MOVIELENS_DIR", REPO.parent / "shared" / "data" / "movielens-100k"))
    data = folder / "u.data"
    if not data.is_file():
        pytest.fail(
            f"MovieLens 100k is missing: {data} does not exist. Put the data set there "
            "(it is never committed here) or point CLICKREC_MOVIELENS_DIR at its folder."
        )
    return data


@pytest.mark.slow  # 100k ratings
def test_movielens_100k_through_the_ratings_format(spark: SparkSession, config: ClickrecConfig) -> None:
    summary = ingest(spark, config, input_path=str(movielens_file()), input_format="ratings")
    assert summary["rows_read"] == 100_000 and summary["quarantined"] == 0
    assert (summary["interactions"], summary["users"], summary["items"]) == (100_000, 943, 1_682)
    silver = Lake.from_config(config).read(spark, C.SILVER_INTERACTIONS)
    row = silver.where((F.col(C.USER_ID) == "196") & (F.col(C.ITEM_ID) == "242")).first()
    assert row[C.RATING] == 3.0  # the explicit rating is kept
    assert silver.agg(F.max(C.USER_IDX), F.max(C.ITEM_IDX)).first() == (942, 1681)


def test_ratings_header_user_like_ids_huge_timestamps_and_a_late_older_rating(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, ingest={"data_docs": False, "max_rejected_fraction": 0.9})
    lake = Lake.from_config(config)
    first = tmp_path / "ratings-1.csv"
    first.write_text(
        "userId,movieId,rating,timestamp\n"  # a header: not a row
        "user42,item7,4,881250949\n"  # ids that start with "user" are rows, not headers
        "user42,item8,5,881250950\n"
        "u1,item7,3,1700000000000000\n"  # epoch microseconds: too large for seconds
        "u2,item7,NaN,881250949\nu3,item7,-Infinity,881250949\n"  # would make every ALS factor NaN
    )
    s1 = ingest(spark, config, input_path=str(first), input_format="ratings")
    assert (s1["rows_read"], s1["accepted"], s1["duplicates"], s1["quarantined"]) == (5, 2, 0, 3)
    assert s1["quarantined_by_reason"] == {"timestamp_invalid": 1, "rating_not_finite": 2}

    # A later batch holds an older rating of (user42, item7) and a newer one of item8: the
    # latest rating wins across batches as it does within one.
    second = tmp_path / "ratings-2.tsv"
    second.write_text("user42\titem7\t1\t881250000\nuser42\titem8\t2\t881250951\n")
    s2 = ingest(spark, config, input_path=str(second), input_format="ratings")
    assert (s2["rows_read"], s2["accepted"], s2["duplicates"], s2["quarantined"]) == (2, 1, 1, 0)
    silver = lake.read(spark, C.SILVER_INTERACTIONS)
    got = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.RATING] for r in silver.collect()}
    assert got == {("user42", "item7"): 4.0, ("user42", "item8"): 2.0}

    # The MERGE keeps the rule on its own, for a newer rating another ingest committed after
    # the check: with the check bypassed, an older rating still does not overwrite.
    monkeypatch.setattr("clickrec.ingest._not_older_than_silver", lambda spark, config, ratings: ratings)
    third = tmp_path / "ratings-3.tsv"
    third.write_text("user42\titem8\t5\t881250000\n")
    ingest(spark, config, input_path=str(third), input_format="ratings")
    silver = lake.read(spark, C.SILVER_INTERACTIONS)
    assert {(r[C.USER_ID], r[C.ITEM_ID]): r[C.RATING] for r in silver.collect()}[("user42", "item8")] == 2.0


def test_cli_generate_then_ingest_prints_a_json_summary(
    spark: SparkSession, tmp_path: Path, cli: Callable[..., subprocess.CompletedProcess[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The commands in this process (on the run's session); tests/integration/test_cli.py runs
    the real entry point as a process, and spark-submit."""
    data = tmp_path / "events.csv"
    gen = cli("generate", "--events", "1500", "--out", str(data), "--seed", "3")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout.strip().splitlines()[-1])["events"] == 1500
    overrides = ["--set", f"lake.root={tmp_path / 'lake'}", "--set", "spark.master=local[2]",
                 "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=1g"]
    result = cli("ingest", "--input", str(data), *overrides)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["command"] == "ingest" and summary["ok"] is True
    assert summary["rows_read"] == 1500 == summary["accepted"] + summary["duplicates"] + summary["quarantined"]
    # the thin spark-submit entry point is the same command; bad input exits 2 naming the path
    code, out, err = run_entry(REPO / "jobs" / "ingest.py", ["--input", str(tmp_path / "missing.csv"), *overrides],
                               capsys)
    assert code == 2
    assert "missing.csv" in err
    assert json.loads(out.strip().splitlines()[-1])["error_type"] == "InputError"
