"""Pure clickstream transformations on small inline data: parsing, ids, dwell, aggregation, rating."""

from __future__ import annotations

import math
from datetime import datetime

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from clickrec import columns as C
from clickrec.config import IngestConfig
from clickrec.quality import load_suite, rejection_checks
from clickrec.transforms import clickstream as T

SOURCE = IngestConfig().source_columns
FORMATS = IngestConfig().event_time_formats
GOOD = "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3-4e00-8c23-a032dfed738c"


def lines(spark: SparkSession, *values: str | bytes) -> DataFrame:
    """Raw lines as spark.read.text gives them (bytes kept as they are, even invalid UTF-8)."""
    rows = [(bytearray(v if isinstance(v, bytes) else v.encode()),) for v in values]
    return spark.createDataFrame(rows, "b binary").select(F.col("b").cast("string").alias(C.VALUE))


def parse(spark: SparkSession, *values: str | bytes) -> DataFrame:
    return (
        lines(spark, *values)
        .transform(T.parse_csv_lines, source_columns=SOURCE)
        .transform(T.to_canonical, keep=(C.VALUE, C.COLUMN_COUNT, C.UTF8_VALID))
        .transform(T.type_events, time_formats=FORMATS)
    )


def test_parse_good_line_types_every_column(spark: SparkSession) -> None:
    row = parse(spark, GOOD).first()
    assert row[C.EVENT_TIME] == datetime(2019, 10, 1, 0, 0, 0)
    assert row[C.EVENT_TYPE] == "view"
    assert row[C.PRODUCT_ID] == "44600062"
    assert row[C.CATEGORY_CODE] is None  # blank -> null
    assert row[C.BRAND] == "shiseido"
    assert row[C.PRICE] == pytest.approx(35.79)
    assert row[C.USER_ID] == "541312140"
    assert row[C.EVENT_DATE].isoformat() == "2019-10-01"
    assert row[C.COLUMN_COUNT] == 9 and row[C.UTF8_VALID] is True


def test_parse_keeps_malformed_lines_with_their_problems(spark: SparkSession) -> None:
    bad_utf8 = GOOD.replace("shiseido", "shi").encode() + b"\xff\xfe"
    rows = parse(
        spark,
        GOOD + ",extra",  # too many columns
        "2019-10-01 00:00:00 UTC,view,446000",  # truncated
        '2019-10-01 00:00:00 UTC,view,1,2,"a,b",brand,1.0,7,s',  # quoted comma: fine
        "",  # blank line
        bad_utf8,
        "not a time,VIEW ,1,2,,b,abc,7,s",
    ).collect()
    counts = [r[C.COLUMN_COUNT] for r in rows]
    assert counts == [10, 3, 9, 0, 9, 9]
    assert rows[2][C.CATEGORY_CODE] == "a,b"
    assert [r[C.UTF8_VALID] for r in rows] == [True, True, True, True, False, True]
    assert rows[5][C.EVENT_TIME] is None and rows[5][C.PRICE] is None
    assert rows[5][C.EVENT_TYPE] == "view"  # trimmed and lower-cased
    assert len(rows) == 6  # nothing dropped


@pytest.mark.parametrize("delimiter", [",", "\t", "|", ";"])
def test_parse_unquoted_lines_split_like_from_csv(spark: SparkSession, delimiter: str) -> None:
    """The split fast path (lines without quotes) gives what from_csv gives, field for field."""
    cols = ("a", "b", "c", "d")
    samples = ["1,2,3,4", "1,,3,", ",,,", " x , y ,z,w", "1,2", "1,2,3,4,5,6", "a\\b,c,d,e", "  ", "x.y,a+b,(c),[d]", "a\\,b,c,d", "\\,x,y,z\\"]
    values = [v.replace(",", delimiter) for v in samples]
    got = lines(spark, *values).transform(T.parse_csv_lines, source_columns=cols, delimiter=delimiter)
    schema = ", ".join(f"`{c}` STRING" for c in cols)
    expected = lines(spark, *values).select(
        C.VALUE, F.from_csv(C.VALUE, schema, {"sep": delimiter, "mode": "PERMISSIVE"}).alias("p")
    )
    rows = {r[C.VALUE]: r for r in got.collect()}
    for r in expected.collect():
        assert tuple(rows[r[C.VALUE]][c] for c in cols) == tuple(r["p"][c] for c in cols), r[C.VALUE]
    counts = [rows[v][C.COLUMN_COUNT] for v in values]
    assert counts == [4, 4, 4, 4, 2, 6, 4, 0, 4, 4, 4]


def test_parse_json_lines(spark: SparkSession) -> None:
    good = (
        '{"event_time":"2019-10-01 00:00:00 UTC","event_type":"cart","product_id":5,'
        '"category_id":1,"category_code":null,"brand":"x","price":1.5,"user_id":7,"user_session":"s"}'
    )
    df = (
        lines(spark, good, "{not json")
        .transform(T.parse_json_lines, source_columns=SOURCE)
        .transform(T.to_canonical, keep=(C.COLUMN_COUNT,))
        .transform(T.type_events, time_formats=FORMATS)
    )
    first, second = df.collect()
    assert (first[C.PRODUCT_ID], first[C.PRICE], first[C.USER_ID]) == ("5", 1.5, "7")
    assert first[C.COLUMN_COUNT] == 9 and second[C.COLUMN_COUNT] == 0


def test_time_formats_are_equivalent(spark: SparkSession) -> None:
    base = "view,1,2,,b,1.0,7,s"
    df = parse(spark, f"2019-10-01 10:00:00 UTC,{base}", f"2019-10-01 10:00:00,{base}",
               f"2019-10-01T12:00:00+02:00,{base}")
    assert {r[C.EVENT_TIME] for r in df.collect()} == {datetime(2019, 10, 1, 10, 0, 0)}


def test_column_mapping_session_only_log(spark: SparkSession) -> None:
    """A log without users: its session stands in for the user."""
    raw = lines(spark, "2019-10-01 00:00:00,view,p1,sess-9")
    df = raw.transform(T.parse_csv_lines, source_columns=("ts", "kind", "sku", "sid")).transform(
        T.to_canonical,
        column_mapping={"event_time": "ts", "event_type": "kind", "product_id": "sku",
                        "user_id": "sid", "user_session": "sid"},
    )
    row = df.first()
    assert (row[C.USER_ID], row[C.USER_SESSION], row[C.PRODUCT_ID]) == ("sess-9", "sess-9", "p1")
    assert row[C.BRAND] is None and row[C.PRICE] is None


@pytest.mark.parametrize(("fmt", "raw", "expected"), [
    ("epoch_seconds", "1443440412", datetime(2015, 9, 28, 11, 40, 12)),
    ("epoch_seconds", " 1443440412.25 ", datetime(2015, 9, 28, 11, 40, 12, 250000)),
    ("epoch_millis", "1433221332117", datetime(2015, 6, 2, 5, 2, 12, 117000)),
    ("epoch_micros", "1433221332117001", datetime(2015, 6, 2, 5, 2, 12, 117001)),
    ("epoch_seconds", "2015-09-28 11:40:12", None),  # not a number
    ("epoch_seconds", "1e400", None),
    ("epoch_millis", "99999999999999999999999", None),  # beyond a timestamp: null, not an error
    ("epoch_seconds", None, None),
])
def test_epoch_time_formats(spark: SparkSession, fmt: str, raw: str | None, expected: datetime | None) -> None:
    df = spark.createDataFrame([(raw,)], "t string").select(T.parse_time(F.col("t"), fmt).alias("ts"))
    assert df.first()["ts"] == expected


def test_constants_and_event_type_values_give_a_layout_its_missing_columns(spark: SparkSession) -> None:
    """A RetailRocket-like row (its own event names) and a views-only log (no event type)."""
    retail = (
        lines(spark, "1433221332117,257597,addtocart,355908,", "1433221332118,257597,Transaction,355908,t1",
              "1433221332119,257597,wishlist,355908,")
        .transform(T.parse_csv_lines, source_columns=("timestamp", "visitorid", "event", "itemid", "transactionid"))
        .transform(T.to_canonical, column_mapping={"event_time": "timestamp", "user_id": "visitorid",
                                                   "user_session": "visitorid", "event_type": "event",
                                                   "product_id": "itemid"})
        .transform(T.type_events, time_formats=("epoch_millis",),
                   event_type_values={"addtocart": "cart", "transaction": "purchase"})
    )
    assert [r[C.EVENT_TYPE] for r in retail.collect()] == ["cart", "purchase", "wishlist"]  # unmapped: kept
    views = (
        lines(spark, "s1\t214536502\t1396839069").transform(
            T.parse_csv_lines, source_columns=("session", "item", "ts"), delimiter="\t")
        .transform(T.to_canonical, column_mapping={"user_id": "session", "user_session": "session",
                                                   "product_id": "item", "event_time": "ts"},
                   constants={"event_type": "view", "brand": "acme"})
        .transform(T.type_events, time_formats=("epoch_seconds",))
    )
    row = views.first()
    assert (row[C.EVENT_TYPE], row[C.BRAND], row[C.USER_ID], row[C.PRODUCT_ID]) == ("view", "acme", "s1", "214536502")
    assert row[C.EVENT_TIME] == datetime(2014, 4, 7, 2, 51, 9)


def test_non_finite_prices_and_ratings_are_flagged(spark: SparkSession) -> None:
    base = "2019-10-01 00:00:00,view,1,2,,b,{},7,s"
    prices = parse(spark, *(base.format(p) for p in ("NaN", "Infinity", "-inf", "1.5", ""))).collect()
    assert [r[C.PRICE_FINITE] for r in prices] == [False, False, False, True, True]
    ratings = lines(spark, "1\t2\tNaN\t881250949", "1\t2\tInfinity\t881250949", "1\t2\t4\t881250949").transform(
        T.parse_ratings_lines).collect()
    assert [r[C.RATING_FINITE] for r in ratings] == [False, False, True]


def test_flag_rejections_names_each_failing_expectation(spark: SparkSession) -> None:
    suite = load_suite(IngestConfig().events_suite, {
        "column_count": 9, "event_time_min": "2000-01-01 00:00:00",
        "event_time_max": "2030-01-01 00:00:00"})
    df = parse(
        spark,
        GOOD,
        GOOD.replace("2019-10-01 00:00:00 UTC", "2019-13-45 00:00:00 UTC"),
        GOOD.replace("2019-10-01", "1970-01-01"),
        GOOD.replace(",35.79,", ",-1.00,"),
        GOOD.replace(",view,", ",click,"),
        GOOD.replace(",541312140,", ",,"),
        GOOD.replace(",44600062,", ",bad id!,"),
        GOOD + ",x",
        GOOD.replace(",35.79,", ",NaN,"),
        GOOD.replace(",view,", ",,"),
        GOOD.replace(",44600062,", ",,"),
        GOOD.replace(",2103807459595387724,", ",cat id,"),
        GOOD.replace(",541312140,", ",user 1,"),
        GOOD.replace(",72d76fde-8bb3-4e00-8c23-a032dfed738c", ","),
        GOOD.replace(",35.79,", ",cheap,"),
    ).transform(T.flag_rejections, checks=rejection_checks(suite))
    reasons = [r[C.REASONS] for r in df.collect()]
    assert reasons == [
        [],
        ["event_time_invalid"],
        ["event_time_out_of_bounds"],
        ["price_negative"],
        ["event_type_unknown"],
        ["user_id_missing"],
        ["product_id_malformed"],
        ["extra_columns"],
        ["price_not_finite"],
        ["event_type_missing"],
        ["product_id_missing"],
        ["category_id_malformed"],
        ["user_id_malformed"],
        ["user_session_missing"],
        ["price_invalid"],
    ]


def test_event_id_is_the_hash_of_the_normalised_row(spark: SparkSession) -> None:
    variants = [
        GOOD,
        GOOD.replace(",view,", ", VIEW ,").replace("2019-10-01 00:00:00 UTC", "2019-10-01T00:00:00Z"),
        GOOD.replace(",35.79,", ",35.790,"),
    ]
    different = GOOD.replace(",35.79,", ",35.80,")
    ids = [r[C.EVENT_ID] for r in parse(spark, *variants, different).transform(T.add_event_id).collect()]
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[0]
    assert len(ids[0]) == 64 and all(c in "0123456789abcdef" for c in ids[0])


def test_event_id_keeps_the_source_id(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("src-1", datetime(2019, 10, 1), "view", "1", None, None, None, 1.0, "7", "s")],
        f"{C.EVENT_ID} string, {C.EVENT_TIME} timestamp, {C.EVENT_TYPE} string, {C.PRODUCT_ID} string, "
        f"{C.CATEGORY_ID} string, {C.CATEGORY_CODE} string, {C.BRAND} string, {C.PRICE} double, "
        f"{C.USER_ID} string, {C.USER_SESSION} string",
    )
    assert df.transform(T.add_event_id).first()[C.EVENT_ID] == "src-1"


# --- sessionised dwell ---------------------------------------------------------------------------

EVENTS_SCHEMA = f"{C.USER_ID} string, {C.USER_SESSION} string, {C.EVENT_TIME} timestamp, {C.EVENT_TYPE} string, {C.PRODUCT_ID} string, k int"


def t(seconds: int) -> datetime:
    return datetime(2019, 10, 1, 0, 0, 0).replace(second=0) + __import__("datetime").timedelta(seconds=seconds)


def dwell_of(spark: SparkSession, rows: list[tuple], cap: float = 100.0, last: float = 7.0) -> dict[int, float | None]:
    df = spark.createDataFrame(rows, EVENTS_SCHEMA).transform(
        T.add_dwell, cap_seconds=cap, last_view_seconds=last
    )
    return {r["k"]: r[C.DWELL_SECONDS] for r in df.collect()}


def test_dwell_matches_a_plain_python_reference_on_long_sessions_with_ties(spark: SparkSession) -> None:
    """Seeded sessions of up to 300 events, many sharing a second, shuffled: every dwell as the definition says."""
    import random

    rng = random.Random(7)
    rows, k = [], 0
    for user, session, length in [("u1", "a", 300), ("u1", "b", 40), ("u2", "a", 1), ("u2", "c", 120)]:
        for _ in range(length):
            k += 1
            rows.append((user, session, t(rng.randrange(0, 400)), rng.choice(["view", "view", "cart"]), "p", k))
    rng.shuffle(rows)
    expected: dict[int, float | None] = {}
    for user, session, when, kind, _, key in rows:
        later = [w for u, s_, w, *_ in rows if (u, s_) == (user, session) and w > when]
        gap = (min(later) - when).total_seconds() if later else None
        expected[key] = None if kind != "view" else 7.0 if gap is None else min(gap, 30.0)
    assert dwell_of(spark, rows, cap=30.0, last=7.0) == expected


def test_dwell_single_event_session_gets_the_default(spark: SparkSession) -> None:
    assert dwell_of(spark, [("u", "s", t(0), "view", "a", 1)]) == {1: 7.0}


def test_dwell_sorts_out_of_order_events_first(spark: SparkSession) -> None:
    rows = [("u", "s", t(50), "view", "c", 3), ("u", "s", t(0), "view", "a", 1),
            ("u", "s", t(20), "view", "b", 2)]
    assert dwell_of(spark, rows) == {1: 20.0, 2: 30.0, 3: 7.0}


def test_dwell_equal_timestamps_share_the_next_later_event(spark: SparkSession) -> None:
    rows = [("u", "s", t(0), "view", "a", 1), ("u", "s", t(0), "view", "b", 2),
            ("u", "s", t(15), "view", "c", 3), ("u", "s", t(15), "view", "d", 4)]
    assert dwell_of(spark, rows) == {1: 15.0, 2: 15.0, 3: 7.0, 4: 7.0}


def test_dwell_is_capped(spark: SparkSession) -> None:
    rows = [("u", "s", t(0), "view", "a", 1), ("u", "s", t(5000), "view", "b", 2)]
    assert dwell_of(spark, rows, cap=100.0) == {1: 100.0, 2: 7.0}


def test_dwell_last_view_and_non_views(spark: SparkSession) -> None:
    rows = [("u", "s", t(0), "view", "a", 1), ("u", "s", t(10), "cart", "a", 2),
            ("u", "s", t(30), "view", "b", 3), ("u", "s", t(40), "purchase", "a", 4)]
    # the view before a cart dwells until the cart; the last *view* dwells until the purchase
    assert dwell_of(spark, rows) == {1: 10.0, 2: None, 3: 10.0, 4: None}


def test_dwell_stays_within_user_and_session(spark: SparkSession) -> None:
    rows = [("u", "s1", t(0), "view", "a", 1), ("u", "s2", t(5), "view", "b", 2),
            ("v", "s1", t(3), "view", "c", 3)]
    assert dwell_of(spark, rows) == {1: 7.0, 2: 7.0, 3: 7.0}


# --- aggregation and rating ----------------------------------------------------------------------


def test_aggregate_interactions(spark: SparkSession) -> None:
    rows = [("u", "s", t(0), "view", "a", 1), ("u", "s", t(10), "view", "a", 2),
            ("u", "s", t(20), "cart", "a", 3), ("u", "s", t(30), "purchase", "a", 4),
            ("u", "s", t(40), "remove_from_cart", "b", 5)]
    df = (spark.createDataFrame(rows, EVENTS_SCHEMA)
          .transform(T.add_dwell, cap_seconds=100.0, last_view_seconds=7.0)
          .transform(T.aggregate_interactions))
    expected = spark.createDataFrame(
        [("u", "a", 2, 20.0, 1, 1, t(0), t(30))],
        f"{C.USER_ID} string, {C.ITEM_ID} string, {C.VIEWS} long, {C.DWELL_SECONDS} double, "
        f"{C.CARTS} long, {C.PURCHASES} long, {C.FIRST_SEEN} timestamp, {C.LAST_SEEN} timestamp",
    )
    assertDataFrameEqual(df, expected)  # the remove-only pair (u, b) carries no signal


INTER_SCHEMA = (f"{C.USER_ID} string, {C.ITEM_ID} string, {C.VIEWS} long, {C.DWELL_SECONDS} double, "
                f"{C.CARTS} long, {C.PURCHASES} long, {C.LAST_SEEN} timestamp")


def test_rating_formula(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("u", "a", 2, 120.0, 1, 1, t(0)), ("u", "b", 1, 0.0, 0, 0, t(0))], INTER_SCHEMA
    ).transform(T.add_implicit_rating, view_weight=1.0, dwell_weight=2.0, dwell_unit_seconds=60.0,
                cart_weight=3.0, purchase_weight=5.0)
    got = {r[C.ITEM_ID]: r[C.RATING] for r in df.collect()}
    assert got["a"] == pytest.approx(2 * 1.0 + 2.0 * math.log(1 + 2.0) + 3.0 + 5.0, abs=1e-6)
    assert got["b"] == pytest.approx(1.0)


def test_rating_decay_is_relative_to_the_users_latest_event(spark: SparkSession) -> None:
    day = 86_400
    df = spark.createDataFrame(
        [("u", "old", 1, 0.0, 0, 0, t(0)), ("u", "new", 1, 0.0, 0, 0, t(2 * day)),
         ("v", "x", 1, 0.0, 0, 0, t(0))], INTER_SCHEMA
    ).transform(T.add_implicit_rating, dwell_weight=0.0, decay_half_life_days=2.0)
    got = {(r[C.USER_ID], r[C.ITEM_ID]): r[C.RATING] for r in df.collect()}
    assert got[("u", "new")] == pytest.approx(1.0)
    assert got[("u", "old")] == pytest.approx(0.5)  # one half-life older than u's latest event
    assert got[("v", "x")] == pytest.approx(1.0)  # v's own latest event: no decay


# --- ratings inputs ----------------------------------------------------------------------------


def test_parse_ratings_lines(spark: SparkSession) -> None:
    df = lines(spark, "196\t242\t3\t881250949", "1,31,2.5,1260759144", "1::1193::5::978300760",
               "7\t8\tnope\t881250949", "7\t8\t4").transform(T.parse_ratings_lines)
    rows = df.collect()
    assert [(r[C.USER_ID], r[C.ITEM_ID], r[C.RATING]) for r in rows[:3]] == [
        ("196", "242", 3.0), ("1", "31", 2.5), ("1", "1193", 5.0)]
    assert rows[0][C.EVENT_TIME] == datetime(1997, 12, 4, 15, 55, 49)
    assert rows[3][C.RATING] is None
    assert [r[C.COLUMN_COUNT] for r in rows] == [4, 4, 4, 4, 3]


def test_ratings_header_is_a_user_column_name_and_a_non_numeric_rating(spark: SparkSession) -> None:
    values = ["userId,movieId,rating,timestamp", '"user_id"\t"item_id"\t"rating"\t"ts"', "user::item::rating::t",
              "user42\titem7\t4\t881250949", "User_1,31,2.5,1260759144", "username,5,1,1",
              "user,5,3,881250949", "196\t242\t3\t881250949"]
    df = lines(spark, *values).select(F.col(C.VALUE), T.is_ratings_header(F.col(C.VALUE)).alias("h"))
    got = {r[C.VALUE]: r["h"] for r in df.collect()}
    assert got == {v: i < 3 for i, v in enumerate(values)}


def test_parse_ratings_lines_too_large_a_timestamp_is_null_not_an_error(spark: SparkSession) -> None:
    rows = lines(spark, "1\t2\t3\t1700000000000000", "1\t2\t3\t-99999999999999999").transform(
        T.parse_ratings_lines).collect()
    assert [r[C.EVENT_TIME] for r in rows] == [None, None]


def test_ratings_to_interactions_keeps_the_latest_rating(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("1", "a", 2.0, t(0)), ("1", "a", 4.0, t(10)), ("1", "b", 5.0, t(5))],
        f"{C.USER_ID} string, {C.ITEM_ID} string, {C.RATING} double, {C.EVENT_TIME} timestamp",
    ).transform(T.ratings_to_interactions)
    got = {(r[C.ITEM_ID], r[C.RATING], r[C.VIEWS]) for r in df.collect()}
    assert got == {("a", 4.0, 0), ("b", 5.0, 0)}
